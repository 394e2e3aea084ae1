"""The names a trained classifier's files and tensors have, shared by export and predict."""

GRAPH_FILE = "retrained_graph.pb"
LABELS_FILE = "retrained_labels.txt"
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "tensorguess.json"
INPUT_BYTES = "DecodeJpeg/contents"
INPUT_PIXELS = "input_pixels"
OUTPUT = "final_result"
