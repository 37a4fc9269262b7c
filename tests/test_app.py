"""The Gradio app answers a side-by-side request over HTTP (gradio_client against the launched app)."""
import sys

from phi_eval.paths import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))


def test_side_by_side_over_http(tiny_phi_dir):
    import app
    from gradio_client import Client

    demo = app.build((f"hf:{tiny_phi_dir}", f"hf:{tiny_phi_dir}"))
    _, url, _ = demo.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True,
                                    quiet=True)
    try:
        client = Client(url, verbose=False)
        text_a, stats_a, text_b, stats_b = client.predict(
            f"hf:{tiny_phi_dir}", f"hf:{tiny_phi_dir}", "def add(a, b):", 12, 0.0, 1234, api_name="/side_by_side")
    finally:
        demo.close()
    assert text_a and text_a == text_b  # same model, greedy: same completion on both sides
    assert "tokens in" in stats_a and "tok/s" in stats_b
