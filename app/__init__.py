"""The `rationale-audit` command line and (from the annotation issue on) the Gradio app."""
