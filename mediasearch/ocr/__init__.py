"""Text in pictures: detection and recognition with the PP-OCRv4 models that ship in rapidocr-onnxruntime.

``engine`` reads lines (text, confidence, normalised box) from a picture; ``text`` is the one
normaliser of recognised text and of queries; ``junk`` decides which recognised lines count.
Importing this package loads neither onnxruntime nor OpenCV: the engine does, when first used.
"""
