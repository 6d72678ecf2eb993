"""An upstream that echoes what it received, for header-handling tests. Run: python echo_app.py PORT"""

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({
        "method": request.method, "path": request.url.path, "query": request.url.query,
        "headers": [[k, v] for k, v in request.headers.items()], "cookies": dict(request.cookies),
        "body_length": len(body),
    })


app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
