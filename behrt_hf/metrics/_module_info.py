"""The `evaluate.MetricInfo` every metric module of this folder declares.

Imported relatively (`from ._module_info import metric_info`): `evaluate.load(PATH)` copies a
module's relative imports from beside it, so each module still loads offline by path.
"""

import datasets
import evaluate


def metric_info(description: str, inputs_description: str, **features) -> evaluate.MetricInfo:
    """The module's info: its description, its arguments' description and its input features."""
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs_description,
        features=datasets.Features(features),
    )
