package org.adaptiveedge.demo

import android.Manifest.permission.CAMERA
import android.content.Intent
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.os.Bundle
import android.view.View
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.RadioGroup
import android.widget.SeekBar
import android.widget.Switch
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageCapture
import androidx.camera.core.ImageCaptureException
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import org.adaptiveedge.core.BundleException
import org.adaptiveedge.core.Images
import org.adaptiveedge.core.Session
import org.adaptiveedge.core.Summary
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * The demo: pick an image (sample, gallery or camera), run the bundle's
 * selector then its chosen path, and show what it cost. All inference runs on
 * one background thread; everything the screen shows comes from the core's
 * [Summary], the same numbers the Python runtime reports.
 */
class MainActivity : ComponentActivity() {
    private val inference: ExecutorService = Executors.newSingleThreadExecutor()
    private var session: Session? = null
    private var runner: ExecuTorchRunner? = null
    private var image: Images? = null
    private var samples: List<Pair<String, Bitmap>> = emptyList()
    private var nextSample = 0
    private var capture: ImageCapture? = null

    private lateinit var status: TextView
    private lateinit var picture: ImageView
    private lateinit var preview: PreviewView
    private lateinit var cameraButton: Button
    private lateinit var staticModel: Switch
    private lateinit var scaleLabel: TextView
    private lateinit var scale: SeekBar
    private lateinit var budgetRow: View
    private lateinit var budget: EditText
    private lateinit var budgetUnit: RadioGroup
    private lateinit var labels: TextView
    private lateinit var path: TextView
    private lateinit var blocks: BlockStripView
    private lateinit var cost: TextView

    private val pickImage = registerForActivityResult(ActivityResultContracts.GetContent()) { uri ->
        uri?.let { Pictures.decode(this, it) }?.let { show(it, "gallery") }
    }
    private val askCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.text = getString(R.string.camera) + ": permission refused"
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        picture = findViewById(R.id.image)
        preview = findViewById(R.id.preview)
        cameraButton = findViewById(R.id.camera)
        staticModel = findViewById(R.id.static_model)
        scaleLabel = findViewById(R.id.scale_label)
        scale = findViewById(R.id.scale)
        budgetRow = findViewById(R.id.budget_row)
        budget = findViewById(R.id.budget)
        budgetUnit = findViewById(R.id.budget_unit)
        labels = findViewById(R.id.labels)
        path = findViewById(R.id.path)
        blocks = findViewById(R.id.blocks)
        cost = findViewById(R.id.cost)

        findViewById<Button>(R.id.sample).setOnClickListener { showNextSample() }
        findViewById<Button>(R.id.gallery).setOnClickListener { pickImage.launch("image/*") }
        cameraButton.setOnClickListener { if (capture == null) openCamera() else takePicture() }
        findViewById<Button>(R.id.benchmark).setOnClickListener { startActivity(Intent(this, BenchmarkActivity::class.java)) }
        findViewById<Button>(R.id.apply_budget).setOnClickListener { classify() }
        staticModel.setOnCheckedChangeListener { _, _ -> classify() }
        scale.setOnSeekBarChangeListener(object : SeekBar.OnSeekBarChangeListener {
            override fun onProgressChanged(bar: SeekBar, progress: Int, fromUser: Boolean) {
                scaleLabel.text = "compute scale S = %.2f".format(progress / 100.0)
            }

            override fun onStartTrackingTouch(bar: SeekBar) = Unit
            override fun onStopTrackingTouch(bar: SeekBar) = classify()
        })
        samples = Pictures.samples(this)
        inference.execute(::load)
    }

    override fun onDestroy() {
        inference.execute { runner?.close() }
        inference.shutdown()
        super.onDestroy()
    }

    /** Open and validate the bundle; a damaged one is named on screen, and nothing runs. */
    private fun load() {
        val message = try {
            val opened = Bundles.open(this)
            runner = ExecuTorchRunner(opened.directory, opened.manifest)
            val loaded = Session(opened.manifest, runner!!)
            session = loaded
            val m = loaded.manifest
            "${m.family} bundle (${m.dispatch.rule} rule, format ${m.formatVersion}), ${opened.origin}: ${m.graphs.size} graphs, " +
                "full model %.2f MMACs".format(m.referenceMacs / 1e6)
        } catch (error: BundleException) {
            "Bundle refused: ${error.message}"
        } catch (error: Exception) {  // unreadable assets or storage, or a program ExecuTorch cannot run
            "Cannot load the bundle: $error"
        }
        runOnUiThread {
            status.text = message
            val loaded = session ?: return@runOnUiThread
            scaleLabel.visibility = if (loaded.takesScale) View.VISIBLE else View.GONE
            scale.visibility = scaleLabel.visibility
            scaleLabel.text = "compute scale S = %.2f".format(scale.progress / 100.0)
            budgetRow.visibility = if (loaded.takesBudget) View.VISIBLE else View.GONE
            showNextSample()
        }
    }

    private fun showNextSample() {
        if (samples.isEmpty()) return
        val (name, bitmap) = samples[nextSample++ % samples.size]
        show(bitmap, name)
    }

    private fun show(bitmap: Bitmap, source: String) {
        picture.setImageBitmap(bitmap)
        picture.contentDescription = source
        image = Pictures.toImages(bitmap)
        classify()
    }

    /** Run the current image with the controls' settings, read here on the UI thread. */
    private fun classify() {
        val loaded = session ?: return
        val images = image ?: return
        val static = staticModel.isChecked
        val s = if (loaded.takesScale) doubleArrayOf(scale.progress / 100.0) else null
        val limit = if (loaded.takesBudget) budget.text.toString().toDoubleOrNull() else null
        val inMs = budgetUnit.checkedRadioButtonId == R.id.unit_ms
        inference.execute {
            val outcome = runCatching {
                val result = loaded.run(
                    images, scale = s, static = static,
                    budgetMacs = limit?.takeIf { !inMs }?.let { it * 1e6 }, budgetMs = limit?.takeIf { inMs },
                )
                Summary.of(loaded.manifest, result, static)
            }
            runOnUiThread { outcome.fold(::render) { labels.text = it.message; path.text = ""; cost.text = "" } }
        }
    }

    private fun render(summary: Summary) {
        labels.text = summary.top.joinToString("\n") { "%6.1f%%  %s".format(100 * it.probability, it.name) }
        val view = summary.view
        val ran = view.blocks?.count { it }
        path.text = "path ${summary.path}" + (view.detail?.let { " ($it)" } ?: "") + (ran?.let { " : $it of ${view.blocks!!.size} blocks ran" } ?: "")
        blocks.visibility = if (view.blocks != null) View.VISIBLE else View.GONE
        blocks.blocks = view.blocks.orEmpty()
        cost.text = "MACs  %.2f M of %.2f M for the full model (%.0f%%)\n".format(summary.macs / 1e6, summary.referenceMacs / 1e6, 100 * summary.macsShare) +
            "time  preprocess %.2f  selector %.2f  subgraphs %.2f  total %.2f ms".format(
                summary.preprocessMs, summary.selectorMs, summary.pathMs, summary.totalMs,
            )
    }

    private fun openCamera() {
        if (checkSelfPermission(CAMERA) == PackageManager.PERMISSION_GRANTED) startCamera() else askCamera.launch(CAMERA)
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val shown = Preview.Builder().build().also { it.setSurfaceProvider(preview.surfaceProvider) }
            val still = ImageCapture.Builder().build()
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, shown, still)
            capture = still
            preview.visibility = View.VISIBLE
            cameraButton.text = getString(R.string.capture)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun takePicture() {
        capture?.takePicture(inference, object : ImageCapture.OnImageCapturedCallback() {
            override fun onCaptureSuccess(frame: ImageProxy) {
                val bitmap = Pictures.rotated(frame.toBitmap(), frame.imageInfo.rotationDegrees)
                frame.close()
                runOnUiThread {
                    preview.visibility = View.GONE
                    show(bitmap, "camera")
                }
            }

            override fun onError(error: ImageCaptureException) {
                runOnUiThread { status.text = "Camera: ${error.message}" }
            }
        })
    }
}
