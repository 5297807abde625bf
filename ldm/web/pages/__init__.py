"""One module per page; each has `router` (an APIRouter with GET /<name> and its POST /api/<name>/... actions)."""

# (module, title) in navigation order
PAGES = [
    ("dataset", "Dataset"),
    ("train", "Train"),
    ("compare", "Compare"),
    ("generate", "Generate"),
    ("embeddings", "Embeddings"),
]
