"""Training: the one hand-written training step, the loops around it, and ``fit``.

``step``: pure step, epoch and loop functions and :class:`TrainState`; ``fit``: the host driver;
``compile``: XLA compile options; ``optimizers``: optimizers and learning-rate schedules by
name; ``early_stopping``: the :class:`EarlyStopping` record; ``progress``: the progress bar;
``precision``: precision policies (f32, bf16, highest, f64).
"""

from jaxprop.train.compile import (
    FAST_COMPILE,
    auto_compiler_options,
    auto_unroll,
    enable_compilation_cache,
)
from jaxprop.train.early_stopping import EarlyStopping
from jaxprop.train.fit import History, TrainingDiverged, TrainingInterrupted, fit, fit_state
from jaxprop.train.optimizers import (
    OPTIMIZERS,
    SCHEDULES,
    as_optimizer,
    get_optimizer,
    make_optimizer,
    make_schedule,
)
from jaxprop.train.precision import PRECISIONS, Precision, get_precision
from jaxprop.train.step import (
    TrainState,
    accuracy_fn,
    init_state,
    make_epoch_fn,
    make_eval_fn,
    make_train_epochs,
    make_train_step,
    masked_loss_and_grad_fn,
    masked_loss_grad_state_fn,
    step_key,
)

__all__ = [
    "EarlyStopping", "FAST_COMPILE", "History", "OPTIMIZERS", "SCHEDULES", "TrainState", "TrainingDiverged",
    "TrainingInterrupted", "accuracy_fn", "as_optimizer", "auto_compiler_options", "auto_unroll",
    "enable_compilation_cache", "fit", "fit_state", "get_optimizer", "init_state",
    "make_epoch_fn", "make_eval_fn", "make_optimizer", "make_schedule", "make_train_epochs",
    "make_train_step", "masked_loss_and_grad_fn", "masked_loss_grad_state_fn", "step_key",
    "PRECISIONS", "Precision", "get_precision",
]
