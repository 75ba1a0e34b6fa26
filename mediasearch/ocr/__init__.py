"""Text in pictures: detection and recognition with the PP-OCRv4 models that ship in rapidocr-onnxruntime."""
