"""Labelling photos with a trained model: reading its files (model_reader, layouts), the
classifier of TF_FILES and of an exported file, the --model factory (loading), sorting a
folder (sort) and the same on a Ray cluster (cluster/)."""
