"""`mambagen app`: the local web page (`mambagen.app`, the `app` extra)."""
from __future__ import annotations

from .common import FMT, device_of


def cmd_app(args) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("mambagen app needs Gradio: pip install 'mambagen[app]'") from None
    from ..app import build_app
    page = build_app(args.model or ["demo"], device_of(args.device))
    print(f"mambagen app on http://{args.host}:{args.port} (Ctrl-C stops it)")
    page.launch(server_name=args.host, server_port=args.port, share=False, show_error=False)


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("app", formatter_class=FMT, help="a local web page to sample and edit (Gradio)",
                              description="Serve a page with three tabs: Generate (classes by name, the sampling "
                              "setting, a grid with PNG/.npz downloads), Edit (paint the region to regenerate; "
                              "inpaint, outpaint, ARPG's larger canvas) and Model (what is loaded). The demo model on "
                              "CPU by default; the family's fast path on CUDA.")
    p.add_argument("--model", action="append", default=None,
                   help="a model to offer (repeat for several): 'demo', a directory, official:NAME or hf:ORG/REPO "
                        "(default: demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.set_defaults(fn=cmd_app)
