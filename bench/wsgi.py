"""The app under benchmark: the real one, plus an empty 204 route for the baseline."""

from flask import Response

from api.app import create_app

app = create_app()


@app.route("/bench/empty", methods=["GET", "POST"])
def empty() -> Response:
    return Response(status=204)
