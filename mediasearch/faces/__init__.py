"""Faces: detection, alignment and 128-d embeddings (dlib models from face-recognition-models), grouped into people."""
