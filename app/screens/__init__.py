"""The Gradio app's screens, one module each (see app/ui.py)."""
