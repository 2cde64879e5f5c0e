package org.adaptiveedge.core

import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener
import java.util.zip.ZipFile
import kotlin.system.exitProcess

/**
 * Runs every `*Test` class in the given jar with JUnit 4 and ends with the
 * line `N passed, N failed`: the core's tests without Gradle (android_demo/test.sh).
 */
fun main(args: Array<String>) {
    val jar = args.singleOrNull() ?: error("usage: RunTests TESTS.jar")
    val classes = ZipFile(jar).use { zip ->
        zip.entries().asSequence().map { it.name }.filter { it.endsWith("Test.class") && '$' !in it }
            .map { Class.forName(it.removeSuffix(".class").replace('/', '.')) }.sortedBy { it.name }.toList()
    }
    var failed = 0
    var count = 0
    val core = JUnitCore()
    core.addListener(object : RunListener() {
        override fun testFinished(description: Description) {
            count++
        }

        override fun testFailure(failure: Failure) {
            failed++
            println("FAILED ${failure.description.displayName}: ${failure.message}")
            failure.trace.lineSequence().filter { "org.adaptiveedge" in it }.take(4).forEach { println("    $it") }
        }
    })
    core.run(*classes.toTypedArray())
    println("${count - failed} passed, $failed failed")
    exitProcess(if (failed == 0 && count > 0) 0 else 1)
}
