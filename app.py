"""Launch phi-eval's Gradio app: `python app.py [--host H] [--port P]`, the same as `phi-eval app`.

The page is phi_eval/app/page.py."""
import sys

from phi_eval.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
