package org.adaptiveedge.core

import java.io.File
import java.security.MessageDigest

/**
 * A bundle directory opened as `runtime.format.bundle.open_bundle` opens it: the
 * manifest validated, then every artifact checked against the sha256 the
 * manifest pins, before anything runs it. Messages name the file.
 */
object Bundle {
    fun open(bundle: File): Manifest {
        val manifest = readManifest(bundle)
        for ((file, artifact) in manifest.artifacts) {
            val path = File(bundle, file)
            if (!path.isFile) throw BundleException("${path.path}: artifact listed in the manifest is missing")
            val actual = sha256(path)
            if (actual != artifact.sha256) {
                throw BundleException("${path.path}: sha256 $actual does not match the manifest's ${artifact.sha256}; the file is corrupt")
            }
        }
        return manifest
    }

    fun readManifest(bundle: File): Manifest {
        val source = File(bundle, MANIFEST_FILE)
        if (!bundle.isDirectory) throw BundleException("${bundle.path}: not a bundle directory")
        if (!source.isFile) {
            throw BundleException("${source.path}: manifest is missing; is ${bundle.path} a bundle written by `python -m exporter`?")
        }
        val text = try {
            Charsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(source.readBytes())).toString()
        } catch (error: java.nio.charset.CharacterCodingException) {
            throw BundleException("${source.path}: not valid JSON (not UTF-8: $error)")
        }
        return Manifest.parse(text, source.path)
    }

    fun sha256(file: File): String {
        val digest = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { stream ->
            val buffer = ByteArray(1 shl 20)
            while (true) {
                val read = stream.read(buffer)
                if (read < 0) break
                digest.update(buffer, 0, read)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }
}
