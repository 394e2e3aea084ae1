"""The photos: scanning data/<label>/ and splitting it (dataset), decoding and resizing
(images), and the drawn sample photos of `tensorguess sample-data` (sample_data)."""
