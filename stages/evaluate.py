"""Stage evaluate: the trained model on the prepared test set.

Writes metrics/eval.json (accuracy, loss, per-class accuracy, images; with TTA also the
flip-averaged accuracy), plots/confusion.csv (one row per image, for DVC's confusion
template), plots/confusion.png and plots/misclassified.png.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from onecycle import evaluate as ev
from onecycle import io, plots
from onecycle.batches import EpochLoader
from onecycle.cli import parser, run_stage
from onecycle.data import load_split
from onecycle.device import runtime
from onecycle.io import ArtifactError
from onecycle.model import load_weights
from onecycle.params import load_params

log = logging.getLogger("evaluate")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--confusion", type=Path, required=True)
    p.add_argument("--confusion-png", type=Path, required=True)
    p.add_argument("--mistakes-png", type=Path, required=True)
    args = p.parse_args()
    outputs = [args.metrics, args.confusion, args.confusion_png, args.mistakes_png]
    run_stage(lambda: evaluate(args), outputs)


def evaluate(args) -> None:
    params = load_params(args.params)
    ep = params.evaluate
    test = load_split(args.data, "test", params.data.test_samples, params.seed)
    rt = runtime(params.train.device, params.train.precision, params.train.channels_last)
    log.info("%s", rt.describe())
    model = rt.prepare_model(load_weights(args.model, params.model.width, len(test.classes)))
    # The test pass of training's epochs (normalize only, stored order), at evaluate's batch size.
    loader = EpochLoader(test, ep.batch_size, params.augment, None, rt, params.seed, train=False)
    pred = ev.predict(model, loader.epoch(0), rt)
    if not torch.isfinite(pred.logits).all():
        raise ArtifactError(f"the model in {args.model} outputs NaN or infinite logits (damaged or diverged "
                            "weights): retrain it with `dvc repro -f train_onecycle`")
    metrics = {
        # rounded as read: % to 0.01 (one image in 10,000), cross-entropy to 4 significant digits
        "accuracy": round(pred.accuracy, 2),
        "loss": io.significant(pred.loss),
        "images": int(len(test.labels)),
        "per_class_accuracy": {name: None if acc is None else round(acc, 2)
                               for name, acc in ev.per_class_accuracy(pred, test.classes).items()},
    }
    if ep.tta:
        tta = ev.predict(model, loader.epoch(0), rt, flip=True)
        metrics["tta"] = {"accuracy": round(tta.accuracy, 2), "loss": io.significant(tta.loss)}
    log.info("test accuracy %.2f%% (loss %.4f) on %d images%s", pred.accuracy, pred.loss, len(test.labels),
             f"; with flip TTA {metrics['tta']['accuracy']:.2f}%" if ep.tta else "")
    io.write_json(args.metrics, metrics)
    names = test.classes
    io.write_csv(args.confusion, ["actual", "predicted"],
                 [[names[a], names[p]] for a, p in zip(pred.true, pred.predicted)])
    plots.plot_confusion(ev.confusion_matrix(pred, len(names)), names, args.confusion_png)
    wrong = ev.confident_mistakes(pred, ep.misclassified)
    plots.plot_mistakes(test.images[wrong], [names[i] for i in pred.true[wrong]],
                        [names[i] for i in pred.predicted[wrong]], pred.probs[wrong, pred.predicted[wrong]],
                        args.mistakes_png)


if __name__ == "__main__":
    main()
