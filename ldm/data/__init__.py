"""Training data: personalized datasets (object / style), caption templates, the resumable data module,
and the preprocessing of raw photos into training images."""
