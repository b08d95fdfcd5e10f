"""The web app: `create_app(recognizer)` builds the JSON API and serves the drawing page;
`serving_app()` builds it as each `digitrec serve` process does.

The API and the page use the same `Recognizer` (and so the same preprocessing) as the CLI.
"""

from digitrec.web.app import create_app, serving_app

__all__ = ["create_app", "serving_app"]
