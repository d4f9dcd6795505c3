"""The app under benchmark: the real one, plus empty 204 routes for the baselines."""

from flask import Response, request

from api.app import create_app

app = create_app()


@app.route("/bench/empty", methods=["GET", "POST"])
def empty() -> Response:
    return Response(status=204)


@app.route("/bench/drain", methods=["POST"])
def drain() -> Response:
    """Reads the whole body and drops it: what a batch's bytes cost before any work."""
    request.get_data()
    return Response(status=204)
