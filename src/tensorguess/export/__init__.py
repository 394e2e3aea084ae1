"""Export: the trained classifier in the files other programs load.

`tensorguess export TF_FILES [--format F,...] [--output DIR]` (and `train.sh --export
F,...`) writes the classifier train.sh wrote into TF_FILES (training/model_writer.py: the
frozen 2016-contract graph, its labels, a SavedModel and tensorguess.json) for other
runtimes (formats.py):

    tflite       model.tflite        float32; MediaPipe Tasks' ImageClassifier loads it as it is
    tflite-fp16  model_fp16.tflite   float16 weights
    tflite-int8  model_int8.tflite   full integer, uint8 in and out, calibrated on training photos
    onnx         model.onnx          opset 17, uint8 NHWC in, labels in metadata_props
    serving      serving/<n>/        a SavedModel laid out for TensorFlow Serving

What is promised:

- Every file is written whole or not at all: it is built under a temporary name in the
  output folder (`.tmp-export-*`), checked, and only then renamed over its final name. An
  interrupted or failed export leaves the output folder as it was, but for the files it
  had finished before (each whole). `serving/<n>/` appears in one rename as a complete
  version folder, the next number after those there, which is what TF Serving, watching
  `serving/`, needs: it never sees a half-written version, and the versions before stay.
- Every file is checked before it is renamed: loaded with the runtime an app developer
  uses (LiteRT, ONNX Runtime, TensorFlow's SavedModel loader), it must score the same
  pixels as TensorFlow does (float32 within 1e-4, float16 weights within 0.02) and give no
  NaN. A quantised file's accuracy on the test split is measured beside float32's and
  printed; it is not refused for it.
- One export at a time writes into an output folder (its `.tensorguess.lock`); the next
  removes the temporary folders of one that was killed.
- Nothing is written but the files named above, and nothing outside the output folder
  (TF_FILES/export by default) changes.
- The inputs are the same everywhere: RGB pixels 0-255 (uint8, or float32 for the float
  TFLite files), the photo squashed to the model's size; the models normalise inside.

`tensorguess.export.formats` imports TensorFlow only once an export starts, so the command
line can refuse a bad --format or output folder at once.
"""
