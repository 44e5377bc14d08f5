"""Gradio form fields generated from a command's config class.

The Runs screen launches the same typed configs the CLI reads. Each option field
of a :class:`~annotation_db.provenance.CommandConfig` (what
:meth:`~annotation_db.provenance.CommandConfig.option_fields` lists) becomes one
input: a checkbox for a boolean, a dropdown for a fixed set of choices, a number
or a text box otherwise, labelled with the field's name and description and set
to its default. A field added to a config therefore appears on the command line,
in the YAML and in this form without being retyped. A blank input means "not
given": the config's default (or its derived value) applies.
"""

from typing import Any

import gradio as gr

from annotation_db.command_config import CommandConfig


class ConfigForm:
    """The inputs of one config class, in field order, and the values they hold."""

    def __init__(self, config_cls: type[CommandConfig], exclude: frozenset[str] = frozenset()):
        self.config_cls = config_cls
        self.options = {name: kind for name, kind in config_cls.option_fields().items()
                        if name not in exclude}
        self.fields = list(self.options)
        self.components: list[gr.components.Component] = []

    def render(self, per_row: int = 4) -> "ConfigForm":
        """Create the inputs inside the current Blocks context, ``per_row`` to a row
        (call once per form)."""
        for start in range(0, len(self.fields), per_row):
            with gr.Row():
                for name in self.fields[start:start + per_row]:
                    self.components.append(self._component(name))
        return self

    def _component(self, name: str) -> gr.components.Component:
        kind, choices = self.options[name]
        field = self.config_cls.model_fields[name]
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        label = name.replace("_", " ")
        info = (field.description or "").rstrip(".") or None
        if kind is bool:
            return gr.Checkbox(label=label, info=info, value=bool(default))
        if choices:
            return gr.Dropdown(list(choices), label=label, info=info, value=default)
        # Numbers are text boxes too: a browser sends a cleared number field as 0, which
        # would quietly set k = 0 or a gate of 0; a cleared text box means "the default".
        return gr.Textbox(label=label, info=info, value="" if default is None else str(default),
                          placeholder="blank: the default" if kind in (int, float) else None)

    def shown(self, settings: dict[str, Any]) -> list[Any]:
        """The inputs' values that show ``settings`` (a preset), every other field at its
        default, as the form first shows it."""
        values = []
        for name in self.fields:
            kind, choices = self.options[name]
            field = self.config_cls.model_fields[name]
            default = None if field.is_required() else field.get_default(
                call_default_factory=True)
            value = settings.get(name, default)
            if kind is bool:
                values.append(bool(value))
            elif choices:
                values.append(value)
            else:
                values.append("" if value is None else str(value))
        return values

    def positional(self, **given: Any) -> list[Any]:
        """Values in field order, as an API caller passes them: ``given`` where named,
        blank (the config's default) elsewhere."""
        unknown = set(given) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.config_cls.__name__} form has no field "
                             f"{', '.join(sorted(unknown))}")
        return [given.get(name) for name in self.fields]

    def overrides(self, values: list[Any]) -> dict[str, Any]:
        """Field name → value for the inputs that hold one (blank ones are left out)."""
        if len(values) != len(self.fields):
            raise ValueError(f"{self.config_cls.__name__} form: {len(self.fields)} values "
                             f"expected, {len(values)} given")
        out = {}
        for name, value in zip(self.fields, values, strict=True):
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            out[name] = _as(self.options[name][0], value)
        return out


def _as(kind: type, value: Any) -> Any:
    """A form value as the field's type where it reads as one; otherwise as given, so
    that the config's validation names the field and the problem."""
    if isinstance(value, str):
        value = value.strip()
        if kind in (int, float):
            try:
                value = float(value)
            except ValueError:
                return value
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
