"""Using a trained model: images in, expressions (and where the model looked) out.

    predictor.py        Predictor: a model, its preprocessing and face detection; FacePrediction, ImageResult,
                        load_model (a run folder, a .safetensors, anything ViT.from_pretrained reads); its
                        command-line options (add_image_options), shared by predict, attention and serve
    images.py           read_image, to_image_tensor: files and uploads decoded safely (UnreadableImage & co);
                        collect_inputs: the image files that paths, folders and globs name
    faces.py            face detection with OpenCV's Haar cascade, and the margin a face crop gets
    drawing.py          boxes and labels drawn on a photo or a video frame (the one drawer)
    tables.py           predictions as text: the table and CSV of photos and of a video's timeline
    video/              a video: reading frames, face ids from frame to frame, the timeline, its plot, the
                        annotated .mp4, and predict_video putting them together
    attention_maps.py   a model's attention on one image (rollout, last layer), as the attention command draws it
    web.py              the FastAPI app of the web demo (static/index.html)
    onnx_export.py      export to ONNX, verified with ONNX Runtime against PyTorch

The commands that use them are minivit/commands/predict.py, attention.py, serve.py and export.py.
"""

from .images import ImageTooLarge, NotAnImage, UnreadableImage, read_image, to_image_tensor
from .predictor import FacePrediction, ImageResult, Predictor, load_model

__all__ = ["Predictor", "FacePrediction", "ImageResult", "load_model", "read_image", "to_image_tensor",
           "UnreadableImage", "NotAnImage", "ImageTooLarge"]
