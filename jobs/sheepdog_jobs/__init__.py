"""sheepdog data plane: the stage programs of I-SHEEP and their pure helpers."""
