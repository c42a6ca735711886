"""Models: generator registry, projector, recogniser (frozen facenet trunk + fine-tuned head), weight loading.

Model code is written for one device and never opens a file: weights arrive as state dicts from
`maskgan.models.weights`, which reads bytes through the storage layer.
"""
