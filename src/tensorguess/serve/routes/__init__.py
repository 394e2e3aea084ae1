"""The server's routes, one APIRouter a module: TensorFlow Serving's REST API (tf_serving),
`/v1/guess` (guess) and the page with `/healthz` (page)."""
