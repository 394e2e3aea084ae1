"""The names of what train.sh writes into TF_FILES and of the graph's tensors, shared by all."""

GRAPH_FILE = "retrained_graph.pb"
LABELS_FILE = "retrained_labels.txt"
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "tensorguess.json"
BOTTLENECK_DIR = "bottlenecks"  # the feature cache
INPUT_BYTES = "DecodeJpeg/contents"
INPUT_PIXELS = "input_pixels"
OUTPUT = "final_result"
NOVELTY = "novelty"
# A constant in our graphs: the labels, in output order, that the graph was trained with.
LABELS_NODE = "tensorguess_labels"
