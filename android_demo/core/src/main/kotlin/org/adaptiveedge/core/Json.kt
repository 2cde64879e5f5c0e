package org.adaptiveedge.core

/**
 * JSON read into the same value types Python's `json` module produces, so that
 * validation and its error messages match the Python reader field for field:
 * objects are insertion-ordered maps, integers are [Long] and floats [Double]
 * (`1` and `1.0` differ, as `int` and `float` do), and decode errors use
 * Python's wording. The core stays free of dependencies, so it compiles with
 * kotlinc alone where no Maven repository is reachable.
 */
object Json {
    class DecodeException(message: String) : Exception(message)

    fun parse(text: String): Any? = Parser(text).document()

    /** Python's `json.dumps(value, indent=2)` layout; floats as Python's repr. */
    fun write(value: Any?, indent: Int = 2): String = StringBuilder().also { writeValue(it, value, indent, 0) }.toString()

    private fun writeValue(out: StringBuilder, value: Any?, indent: Int, depth: Int) {
        when (value) {
            null -> out.append("null")
            is Boolean -> out.append(value)
            is Int, is Long -> out.append(value)
            is Float -> writeValue(out, value.toDouble(), indent, depth)
            is Double -> out.append(
                when {
                    value.isNaN() -> "NaN"
                    value.isInfinite() -> if (value > 0) "Infinity" else "-Infinity"
                    else -> Python.floatRepr(value)
                },
            )
            is String -> writeString(out, value)
            is Map<*, *> -> container(out, value.entries.toList(), "{", "}", indent, depth) { entry ->
                writeString(out, entry.key as String)
                out.append(": ")
                writeValue(out, entry.value, indent, depth + 1)
            }
            is List<*> -> container(out, value, "[", "]", indent, depth) { writeValue(out, it, indent, depth + 1) }
            else -> throw IllegalArgumentException("cannot write ${value::class.simpleName} as JSON")
        }
    }

    private fun <T> container(
        out: StringBuilder, items: List<T>, open: String, close: String, indent: Int, depth: Int, item: (T) -> Unit,
    ) {
        if (items.isEmpty()) {
            out.append(open).append(close)
            return
        }
        out.append(open)
        items.forEachIndexed { i, value ->
            if (i > 0) out.append(",")
            out.append("\n").append(" ".repeat(indent * (depth + 1)))
            item(value)
        }
        out.append("\n").append(" ".repeat(indent * depth)).append(close)
    }

    /** As Python's json with ensure_ascii: non-ASCII characters escaped. */
    private fun writeString(out: StringBuilder, text: String) {
        out.append('"')
        for (c in text) {
            when (c) {
                '"' -> out.append("\\\"")
                '\\' -> out.append("\\\\")
                '\n' -> out.append("\\n")
                '\r' -> out.append("\\r")
                '\t' -> out.append("\\t")
                '\b' -> out.append("\\b")
                '\u000c' -> out.append("\\f")
                else -> if (c < ' ' || c > '~') out.append("\\u%04x".format(c.code)) else out.append(c)
            }
        }
        out.append('"')
    }

    private class Parser(private val s: String) {
        private var i = 0

        fun document(): Any? {
            skipSpace()
            val value = value()
            skipSpace()
            if (i != s.length) throw fail("Extra data", i)
            return value
        }

        private fun fail(problem: String, at: Int): DecodeException {
            val line = s.substring(0, at).count { it == '\n' } + 1
            val column = at - (s.lastIndexOf('\n', at - 1).takeIf { at > 0 } ?: -1)
            return DecodeException("$problem: line $line column $column (char $at)")
        }

        private fun skipSpace() {
            while (i < s.length && s[i] in " \t\n\r") i++
        }

        private fun value(): Any? {
            if (i >= s.length) throw fail("Expecting value", i)
            return when (val c = s[i]) {
                '{' -> obj()
                '[' -> array()
                '"' -> string()
                else -> when {
                    s.startsWith("null", i) -> null.also { i += 4 }
                    s.startsWith("true", i) -> true.also { i += 4 }
                    s.startsWith("false", i) -> false.also { i += 5 }
                    s.startsWith("NaN", i) -> Double.NaN.also { i += 3 }
                    s.startsWith("Infinity", i) -> Double.POSITIVE_INFINITY.also { i += 8 }
                    s.startsWith("-Infinity", i) -> Double.NEGATIVE_INFINITY.also { i += 9 }
                    c == '-' || c in '0'..'9' -> number()
                    else -> throw fail("Expecting value", i)
                }
            }
        }

        private fun number(): Any {
            val match = NUMBER.matchAt(s, i) ?: throw fail("Expecting value", i)
            i = match.range.last + 1
            val (integer, fraction, exponent) = match.destructured
            if (fraction.isEmpty() && exponent.isEmpty()) {
                return integer.toLongOrNull() ?: throw fail("Integer too large for this reader", match.range.first)
            }
            return match.value.toDouble()
        }

        private fun string(): String {
            val start = i
            i++
            val out = StringBuilder()
            while (true) {
                if (i >= s.length) throw fail("Unterminated string starting at", start)
                val c = s[i++]
                when {
                    c == '"' -> return out.toString()
                    c == '\\' -> {
                        if (i >= s.length) throw fail("Unterminated string starting at", start)
                        when (val e = s[i++]) {
                            '"', '\\', '/' -> out.append(e)
                            'b' -> out.append('\b')
                            'f' -> out.append('\u000c')
                            'n' -> out.append('\n')
                            'r' -> out.append('\r')
                            't' -> out.append('\t')
                            'u' -> {
                                val hex = s.substring(i, minOf(i + 4, s.length))
                                if (hex.length < 4 || hex.any { it !in HEX }) throw fail("Invalid \\uXXXX escape", i - 1)
                                out.append(hex.toInt(16).toChar())
                                i += 4
                            }
                            else -> throw fail("Invalid \\escape: ${Python.repr(e.toString())}", i - 2)
                        }
                    }
                    c < ' ' -> throw fail("Invalid control character at", i - 1)
                    else -> out.append(c)
                }
            }
        }

        private fun array(): List<Any?> {
            i++
            val items = ArrayList<Any?>()
            skipSpace()
            if (i < s.length && s[i] == ']') return items.also { i++ }
            while (true) {
                skipSpace()
                items.add(value())
                skipSpace()
                when {
                    i < s.length && s[i] == ']' -> return items.also { i++ }
                    i < s.length && s[i] == ',' -> i++
                    else -> throw fail("Expecting ',' delimiter", i)
                }
            }
        }

        private fun obj(): Map<String, Any?> {
            i++
            val items = LinkedHashMap<String, Any?>()
            skipSpace()
            if (i < s.length && s[i] == '}') return items.also { i++ }
            while (true) {
                if (i >= s.length || s[i] != '"') throw fail("Expecting property name enclosed in double quotes", i)
                val key = string()
                skipSpace()
                if (i >= s.length || s[i] != ':') throw fail("Expecting ':' delimiter", i)
                i++
                skipSpace()
                items[key] = value()
                skipSpace()
                when {
                    i < s.length && s[i] == '}' -> return items.also { i++ }
                    i < s.length && s[i] == ',' -> i++
                    else -> throw fail("Expecting ',' delimiter", i)
                }
                skipSpace()
            }
        }

        companion object {
            private val NUMBER = Regex("""(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?""")
            private const val HEX = "0123456789abcdefABCDEF"
        }
    }
}
