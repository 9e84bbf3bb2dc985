"""Science: phantoms, preprocessing and measurement. No Qt, no napari."""
