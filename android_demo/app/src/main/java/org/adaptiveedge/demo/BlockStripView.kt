package org.adaptiveedge.demo

import android.content.Context
import android.graphics.Canvas
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View

/** One cell per residual block: filled if the block ran, outlined if it was skipped. */
class BlockStripView(context: Context, attributes: AttributeSet?) : View(context, attributes) {
    private val ran = Paint().apply { color = 0xFF2E7D32.toInt(); style = Paint.Style.FILL }
    private val skipped = Paint().apply { color = 0xFF9E9E9E.toInt(); style = Paint.Style.STROKE; strokeWidth = 2f }

    var blocks: List<Boolean> = emptyList()
        set(value) {
            field = value
            invalidate()
        }

    override fun onDraw(canvas: Canvas) {
        if (blocks.isEmpty()) return
        val cell = width.toFloat() / blocks.size
        val gap = minOf(4f, cell / 4)
        blocks.forEachIndexed { k, on ->
            canvas.drawRect(k * cell + gap / 2, gap, (k + 1) * cell - gap / 2, height - gap, if (on) ran else skipped)
        }
    }
}
