"""``pypatch serve``: the search service (an optional extra: ``pip install "pypatch[serve]"``).

The room's files, one job each:

* :mod:`~pypatch.serve.settings` -- what the server was told (limits, paths, key), checked once;
* :mod:`~pypatch.serve.engine` -- one loaded index file and the batched work run against it;
* :mod:`~pypatch.serve.batcher` -- the micro-batcher: concurrent requests -> one batched call;
* :mod:`~pypatch.serve.parsing` -- request bodies -> checked queries (and safe server paths);
* :mod:`~pypatch.serve.metrics` -- counters and histograms in the Prometheus text format;
* :mod:`~pypatch.serve.guard` -- the ASGI layer around every request (key, body limit, timing,
  errors as JSON);
* :mod:`~pypatch.serve.app` -- the Starlette application: routes, reload, start and stop.

Nothing here is imported by ``import pypatch`` or by the search path: starlette and uvicorn are
needed only to serve.
"""
