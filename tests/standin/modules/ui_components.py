"""Stand-in of ``modules.ui_components`` (1.10.1): the gradio components extensions build panels from.

``InputAccordion`` is, as there, a hidden checkbox whose value is the accordion's open state;
the accordion itself is ``.accordion``. Simplified: no javascript hooks.
"""

from __future__ import annotations

import gradio as gr


class FormComponent:
    def get_expected_parent(self):
        return FormGroup


class ToolButton(gr.Button, FormComponent):
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        kwargs.pop("tooltip", None)
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class FormRow(gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(gr.HTML):
    def get_block_name(self):
        return "html"


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get('elem_id')
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1

        kwargs.pop("tooltip", None)
        kwargs_checkbox = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **kwargs_checkbox)

        kwargs_accordion = {
            **kwargs,
            "elem_id": self.accordion_id,
            "label": kwargs.get('label', 'Accordion'),
            "elem_classes": ['input-accordion'],
            "open": value,
        }
        self.accordion = gr.Accordion(**kwargs_accordion)

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + '-extra', elem_classes='input-accordion-extra', min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
