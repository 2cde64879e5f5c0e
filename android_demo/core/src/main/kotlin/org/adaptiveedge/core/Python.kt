package org.adaptiveedge.core

import java.math.BigDecimal
import java.math.RoundingMode
import kotlin.math.abs

/**
 * Python's text for values, so that error messages read exactly as the Python
 * reader's do (`repr`, `type(x).__name__`, `str(float)`). JSON values arrive
 * as [Json] makes them; [Tuple] marks a sequence Python would print as a tuple.
 */
object Python {
    class Tuple(val items: List<Any?>)

    fun repr(value: Any?): String = when (value) {
        null -> "None"
        is Boolean -> if (value) "True" else "False"
        is Int, is Long -> value.toString()
        is Float -> floatRepr(value.toDouble())
        is Double -> floatRepr(value)
        is String -> stringRepr(value)
        is Tuple -> if (value.items.size == 1) "(${repr(value.items[0])},)" else value.items.joinToString(", ", "(", ")") { repr(it) }
        is Map<*, *> -> value.entries.joinToString(", ", "{", "}") { "${repr(it.key)}: ${repr(it.value)}" }
        is List<*> -> value.joinToString(", ", "[", "]") { repr(it) }
        is IntArray -> repr(value.toList())
        else -> value.toString()
    }

    /** `type(value).__name__` for a JSON value. */
    fun typeName(value: Any?): String = when (value) {
        null -> "NoneType"
        is Boolean -> "bool"
        is Int, is Long -> "int"
        is Float, is Double -> "float"
        is String -> "str"
        is Map<*, *> -> "dict"
        is List<*> -> "list"
        else -> value::class.simpleName ?: "object"
    }

    /** `repr(float)`: the shortest digits that read back as the same double, in Python's layout. */
    fun floatRepr(value: Double): String {
        if (value.isNaN()) return "nan"
        if (value.isInfinite()) return if (value > 0) "inf" else "-inf"
        if (value == 0.0) return if (1.0 / value < 0) "-0.0" else "0.0"
        val digits = shortestDigits(value)
        val decimal = BigDecimal(digits)
        val exponent = decimal.precision() - decimal.scale() - 1  // of the leading digit
        val unscaled = decimal.unscaledValue().abs().toString()
        val sign = if (value < 0) "-" else ""
        return if (exponent < -4 || exponent >= 16) {
            val mantissa = if (unscaled.length == 1) unscaled else unscaled[0] + "." + unscaled.substring(1)
            val exp = if (exponent < 0) "-%02d".format(-exponent) else "+%02d".format(exponent)
            "$sign${mantissa}e$exp"
        } else {
            val plain = decimal.abs().toPlainString()
            sign + if ('.' in plain) plain else "$plain.0"
        }
    }

    /**
     * `f"{value:.{digits}f}"`: the exact binary value rounded half to even, as
     * Python rounds it (Java's `%f` rounds the shortest decimal half up).
     */
    fun fixed(value: Double, digits: Int): String {
        if (!value.isFinite()) return floatRepr(value)
        val text = BigDecimal(abs(value)).setScale(digits, RoundingMode.HALF_EVEN).toPlainString()
        return if (value < 0 || 1.0 / value < 0) "-$text" else text
    }

    /** `str(float)` equals `repr(float)` in Python 3. */
    fun str(value: Double): String = floatRepr(value)

    private fun shortestDigits(value: Double): String {
        for (precision in 1..17) {
            val text = "%.${precision - 1}e".format(java.util.Locale.ROOT, value)
            if (text.toDouble() == value) return BigDecimal(text).stripTrailingZeros().toString()
        }
        return BigDecimal(value).toString()
    }

    private fun stringRepr(text: String): String {
        val quote = if ('\'' in text && '"' !in text) '"' else '\''
        val out = StringBuilder().append(quote)
        for (c in text) {
            when {
                c == quote || c == '\\' -> out.append('\\').append(c)
                c == '\n' -> out.append("\\n")
                c == '\r' -> out.append("\\r")
                c == '\t' -> out.append("\\t")
                c < ' ' || c == '\u007f' -> out.append("\\x%02x".format(c.code))
                else -> out.append(c)
            }
        }
        return out.append(quote).toString()
    }
}
