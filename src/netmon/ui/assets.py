"""Everything the browser loads besides the pages: the UI's own scripts and styles, the
vendored libraries (``vendor.py``), and the OpenAPI viewer at ``/schema`` pointed at them,
so that netmon's pages and its API docs work without reaching the internet."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

__all__ = ["STATIC_PATH", "schema_viewer", "static_router", "templates"]

HERE = Path(__file__).parent
STATIC_PATH = "/static"
SWAGGER = f"{STATIC_PATH}/vendor/swagger-ui-dist"


def static_router() -> Router:
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[HERE / "static"],
        include_in_schema=False,
        # The files change only with netmon itself; an hour spares reloads of the 1.5 MB
        # Swagger bundle without keeping an upgraded UI away for long.
        cache_control=CacheControlHeader(max_age=3600),
        name="ui-static",
    )


def templates() -> TemplateConfig[JinjaTemplateEngine]:
    # Autoescape on every template: a device name or alert text is data, never markup.
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def schema_viewer() -> SwaggerRenderPlugin:
    """Swagger UI at ``/schema`` from the package's own copy."""
    return SwaggerRenderPlugin(
        js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' href='{STATIC_PATH}/favicon.svg'>",
    )
