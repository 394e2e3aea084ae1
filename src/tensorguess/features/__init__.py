"""From pixels to features: the backbones, the engines that run them (TensorFlow, OpenVINO,
int8), the feature cache (bottlenecks) and the novelty score fitted on features."""
