"""`facelab studio`: the workflow in a local browser page, thin over the library and the
CLI (`app.py` builds the application, `server.py` serves it, one module per page)."""
