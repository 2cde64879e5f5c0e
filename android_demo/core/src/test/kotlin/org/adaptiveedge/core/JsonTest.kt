package org.adaptiveedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class JsonTest {
    @Test
    fun integersAndFloatsStayApartAsInPython() {
        val data = Json.parse("""{"a": 1, "b": 1.0, "c": -2e3, "d": [true, null, "x\u00e9"]}""") as Map<*, *>
        assertEquals(1L, data["a"])
        assertEquals(1.0, data["b"])
        assertEquals(-2000.0, data["c"])
        assertEquals(listOf(true, null, "xé"), data["d"])
    }

    @Test
    fun floatsPrintAsPythonsRepr() {
        val cases = mapOf(0.1 to "0.1", 1.0 to "1.0", 1e-5 to "1e-05", 1.5e16 to "1.5e+16", 0.0001 to "0.0001", 123456.789 to "123456.789",
            -0.25 to "-0.25", 1e22 to "1e+22", 2.0 / 3 to "0.6666666666666666", 0.2138 to "0.2138")
        for ((value, text) in cases) assertEquals(text, Python.floatRepr(value))
    }

    @Test
    fun writingThenReadingKeepsEverything() {
        val value = linkedMapOf("b" to listOf(1L, 2.5, "q\"uote"), "a" to linkedMapOf<String, Any?>(), "n" to null)
        assertEquals(value, Json.parse(Json.write(value)))
        assertTrue(Json.write(value).startsWith("{\n  \"b\": [\n    1,"))
    }
}
