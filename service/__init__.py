"""FER inference gateway: FastAPI in front of Triton, with MTCNN face detection and alignment."""
