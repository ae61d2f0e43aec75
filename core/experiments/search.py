"""A search over training settings: trials sampled and cut short by Optuna, each trial an ordinary training run.

Why Optuna (``optuna==5.1.0``) rather than a few lines of our own: it samples grids (every combination, each tried
once even across a stop and a resume) and random points with log-uniform ranges for rates, it runs successive
halving with its rungs (a trial goes on past epoch 1, 3, 9... only while its validation score is in the top third
of the trials that reached that epoch, decided against every trial seen so far, asynchronously), and it keeps
every trial, its sampled settings and its per-epoch scores in its own SQLite study (``workspace/optuna.sqlite``,
one study per search, named ``search-<id>``), which is what lets a stopped search resume where it was.

What is recorded where:

* the search is a run of kind ``search`` in the run store, its config the :class:`SearchSpec`; it is ``running``
  while its driver thread lives, ``completed`` once every trial ended, ``cancelled`` when stopped (resumable),
  ``crashed`` when its process died (resumable);
* each trial is a training run queued on the job registry (so trials share the cores with everything else and
  wait in its queue), in group ``search-<id>`` with the search as its parent, with params ``search_trial``
  (Optuna's trial number) and ``search_params``; a trial cut short by successive halving also gets
  ``search_outcome: "pruned"``;
* Optuna's study holds each trial's run id (a user attribute), its state and the validation score after each epoch.

Stopping cancels the running trials (they keep their checkpoint), drops the queued ones (their runs are deleted)
and leaves their Optuna trials open; resuming continues each stopped trial from its checkpoint (same run) and
starts the dropped ones afresh with the same settings, then carries on asking for trials.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from core.common.errors import CoreError, RunStoreError, check_choice
from core.common.workspace import Workspace
from core.experiments.rates import RATE_FACTOR, trial_settings
from core.experiments.results import metric_value, pruned, search_group
from core.experiments.space import METHODS, Choice, Space, SpaceError, metric, parse_space, space_json
from core.store.records import ACTIVE_STATUSES
from core.train.config import TrainConfig
from core.train.jobs import JobRegistry

if TYPE_CHECKING:
    import optuna

DEFAULT_TRIALS = 8  # a random search that does not say how many
# Each trial is a training run: 1,000 of even one minute each keep two cores busy for 17 hours.
MAX_TRIALS = 1000
POLL_S = 0.5  # how often a driver reads its trials' scores
STUDY_FILE = "optuna.sqlite"
SH_MIN_EPOCHS = 1  # successive halving: the first rung is after epoch 1 ...
SH_REDUCTION = 3  # ... and each rung keeps the top third (rungs at epochs 1, 3, 9, 27)
_STORAGES: dict[str, Any] = {}
_STORAGES_LOCK = threading.Lock()


@dataclass
class SearchSpec:
    """One search: the base settings, what varies, how many trials, how they are chosen and ranked."""

    base: TrainConfig  # every trial starts from these (the dataset included)
    space: Space
    trials: int = 0  # 0: the whole grid (grid), DEFAULT_TRIALS (random)
    method: str = "random"
    metric: str = "val_acc"
    prune: bool = False  # cut hopeless trials short (successive halving on the per-epoch validation score)
    seed: int = 0

    def checked(self) -> SearchSpec:
        """A copy with ``trials`` settled (a grid is capped at its size); raises SpaceError, ChoiceError or ConfigError."""
        check_choice("method", self.method, METHODS)
        metric(self.metric)
        self.base.validate()
        self._check_rates()
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 0 <= self.trials <= MAX_TRIALS:
            raise SpaceError(f"trials {self.trials!r}: expected a whole number from 0 to {MAX_TRIALS} (0: the whole "
                             f"grid, or {DEFAULT_TRIALS} random draws)")  # fmt: skip
        if self.method != "grid":
            return replace(self, trials=self.trials or DEFAULT_TRIALS)
        size = self.space.grid_size()  # refuses a grid too large to list
        if not self.trials and size > MAX_TRIALS:
            raise SpaceError(f"the whole grid is {size:,} trials, more than {MAX_TRIALS:,}: say how many to try")
        return replace(self, trials=min(self.trials or size, size))

    def _check_rates(self) -> None:
        """Each optimizer's rates at a rate factor's ends are rates ``train`` takes (Adadelta's 1.0 x 100 is not)."""
        option = self.space.options.get(RATE_FACTOR)
        if option is None:
            return
        ends = option.values if isinstance(option, Choice) else (option.low, option.high)
        for optimizer in self.space.optimizers(self.base):
            for factor in (min(ends), max(ends)):
                settings = trial_settings(self.base, {"optimizer": optimizer, RATE_FACTOR: factor})
                try:
                    replace(self.base, **settings).validate()
                except CoreError as exc:
                    raise SpaceError(
                        f"{RATE_FACTOR} {factor:g} gives {optimizer} a rate it cannot take: {exc}"
                    ) from None

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "space": space_json(self.space), "trials": self.trials,
                "method": self.method, "metric": self.metric, "prune": self.prune, "seed": self.seed}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchSpec:
        return cls(TrainConfig.from_dict(values["base"]), parse_space(values["space"]), int(values["trials"]),
                   values["method"], values["metric"], bool(values["prune"]), int(values["seed"]))  # fmt: skip


class Searches:
    """The searches this process drives, one thread each (the dashboard keeps one object; the CLI makes one)."""

    def __init__(self, registry: JobRegistry, ws: Workspace) -> None:
        self.registry, self.ws, self.store = registry, ws, registry.store
        self._drivers: dict[int, _Driver] = {}
        self._lock = threading.Lock()

    def start(self, spec: SearchSpec) -> int:
        """Record a new search and start driving it; returns its id (the search run's id) at once.

        Raises:
            SpaceError, ConfigError: a bad spec. DatasetError: the dataset cannot be opened.
        """
        from core.datasets.sources import resolve_dataset

        spec = spec.checked()
        resolve_dataset(spec.base.dataset, self.ws)  # a missing dataset fails here, not in every trial
        search_id = self.store.create_run(dataset=spec.base.dataset, kind="search", config=spec.to_dict())
        self._drive(search_id, spec)
        return search_id

    def resume(self, search_id: int) -> None:
        """Drive a stopped (cancelled, crashed or failed) search again.

        Raises:
            RunStoreError: not a search, or one that is still running or completed.
        """
        run = self.store.get_run(search_id)
        if run.kind != "search":
            raise RunStoreError(f"run {search_id} is a {run.kind} run, not a search")
        if self.active(search_id) or run.status in (*ACTIVE_STATUSES, "completed"):
            raise RunStoreError(f"search {search_id} is {run.status}; only a stopped search can be resumed")
        self.store.set_status(search_id, "queued")
        self._drive(search_id, SearchSpec.from_dict(run.config))

    def stop(self, search_id: int) -> bool:
        """Ask a search to stop (its running trials are cancelled, the queued ones dropped); False when this
        process does not drive it."""
        with self._lock:
            driver = self._drivers.get(search_id)
        if driver is None or not driver.thread.is_alive():
            return False
        driver.stop.set()
        return True

    def active(self, search_id: int | None = None) -> bool | list[int]:
        """Whether ``search_id`` is being driven here; without an id, the ids of every search driven here."""
        with self._lock:
            alive = [i for i, d in self._drivers.items() if d.thread.is_alive()]
        return alive if search_id is None else search_id in alive

    def wait(self, search_id: int, timeout: float | None = None) -> bool:
        """Block until the search's driver has ended; False on timeout."""
        with self._lock:
            driver = self._drivers.get(search_id)
        if driver is not None:
            driver.thread.join(timeout)
            return not driver.thread.is_alive()
        return True

    def _drive(self, search_id: int, spec: SearchSpec) -> None:
        driver = _Driver(self, search_id, spec)
        with self._lock:
            self._drivers[search_id] = driver
        driver.thread.start()


@dataclass
class _Flight:
    """A trial whose run is queued or training."""

    trial: optuna.trial.Trial
    reported: set[int] = field(default_factory=set)  # epochs already reported to the pruner
    pruning: bool = False  # cancelled by successive halving


class _Driver:
    """Asks Optuna for trials, queues them, reports their epochs, prunes, and tells Optuna how they ended."""

    def __init__(self, searches: Searches, search_id: int, spec: SearchSpec) -> None:
        self.registry, self.ws, self.store = searches.registry, searches.ws, searches.store
        self.search_id, self.spec, self.metric = search_id, spec, metric(spec.metric)
        self.stop = threading.Event()
        self.flight: dict[int, _Flight] = {}
        self.thread = threading.Thread(target=self._run, name=f"studio-search-{search_id}", daemon=True)
        self.error_detail: str | None = None

    def _run(self) -> None:
        status, error = "failed", None
        try:
            self.store.start_run(self.search_id)  # this thread owns the search: if it dies, the search is crashed
            status = self._drive()
        except CoreError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a search must end recorded, whatever broke inside it
            error, self.error_detail = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        finally:
            with contextlib.suppress(RunStoreError):
                self.store.finish_run(self.search_id, status, error=error)

    def _drive(self) -> str:
        import optuna

        study = open_study(self.ws, self.search_id, self.spec)
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self._adopt(study, frozen)
        while True:
            if self.stop.is_set():
                self._halt(study)
                return "cancelled"
            while len(self.flight) < self.registry.cores and len(study.trials) < self.spec.trials:
                self._submit(study, study.ask(self.spec.space.distributions(self.spec.method)))
            self._watch(study)
            if not self.flight and len(study.trials) >= self.spec.trials:
                return "completed"
            self.store.heartbeat(self.search_id)
            self.stop.wait(POLL_S)

    # -- trials in --------------------------------------------------------------------------------

    def _submit(self, study: optuna.Study, trial: optuna.trial.Trial, params: dict | None = None) -> None:
        """Queue a training run for ``trial`` (with its sampled settings, or ``params`` for a restarted one)."""
        from core.train.runner import submit_training

        params = dict(params if params is not None else trial.params)
        try:  # a rate factor becomes the rate of the trial's own optimizer; both are kept with the trial
            params |= trial_settings(self.spec.base, params)
            config = replace(self.spec.base, **{k: v for k, v in params.items() if k != RATE_FACTOR}).validate()
            run_id = submit_training(self.registry, self.ws, config, group=str(search_group(self.search_id)),
                                     parent_id=self.search_id)  # fmt: skip
        except CoreError as exc:  # settings that cannot train together: this trial fails, the search goes on
            trial.set_user_attr("error", str(exc))
            _tell(study, trial, "FAIL")
            return
        trial.set_user_attr("run_id", run_id)
        self.store.log_params(run_id, {"search_trial": trial.number, "search_params": params})
        self.flight[run_id] = _Flight(trial)

    def _adopt(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        """An open trial of a resumed search: watch it, continue its run, tell how it ended, or start it again."""
        import optuna

        from core.train.run_folder import checkpoint_path, delete_run
        from core.train.runner import RESUMABLE, resume_training

        trial = optuna.trial.Trial(study, frozen._trial_id)
        run = self._run_of(frozen.user_attrs.get("run_id"))
        if run is None:
            return self._submit(study, trial, frozen.params)
        flying = _Flight(trial, set(frozen.intermediate_values), pruning=pruned(self.store, run.run_id))
        if run.status in RESUMABLE and not flying.pruning:
            if not checkpoint_path(self.ws, run.run_id, "last").is_file():  # stopped before its first epoch
                delete_run(self.store, self.ws, run.run_id)
                return self._submit(study, trial, frozen.params)
            resume_training(self.registry, self.ws, run.run_id)
        self.flight[run.run_id] = flying

    def _run_of(self, run_id: Any):
        if not isinstance(run_id, int):
            return None
        try:
            return self.store.get_run(run_id)
        except RunStoreError:  # deleted meanwhile
            return None

    # -- trials watched -----------------------------------------------------------------------------

    def _watch(self, study: optuna.Study) -> None:
        for run_id, flying in list(self.flight.items()):
            run = self._run_of(run_id)
            if run is None:  # deleted by hand while it trained
                del self.flight[run_id]
                _tell(study, flying.trial, "FAIL")
                continue
            if self._report(run_id, flying) and self.spec.prune and not flying.pruning:
                if flying.trial.should_prune():
                    flying.pruning = True
                    self.store.log_params(run_id, {"search_outcome": "pruned"})
                    self.registry.cancel(run_id)
            if run.status not in ACTIVE_STATUSES:
                del self.flight[run_id]
                self._conclude(study, flying, run)

    def _report(self, run_id: int, flying: _Flight) -> bool:
        """Report the epochs not yet reported; True when there were any."""
        frame = self.store.metrics(run_id, [self.metric.per_epoch])
        fresh = frame[~frame["step"].isin(flying.reported) & frame["value"].notna()]
        for row in fresh.itertuples():
            flying.trial.report(float(row.value), int(row.step))
            flying.reported.add(int(row.step))
        return not fresh.empty

    def _conclude(self, study: optuna.Study, flying: _Flight, run: Any) -> None:
        if flying.pruning:
            _tell(study, flying.trial, "PRUNED")
        elif (
            run.status == "completed" and (value := metric_value(self.store, run.run_id, self.metric.name)) is not None
        ):
            _tell(study, flying.trial, "COMPLETE", value)
        else:  # failed, stopped by hand, or no score to rank it by (no validation images)
            flying.trial.set_user_attr("error", run.error or f"ended {run.status} without a {self.metric.words}")
            _tell(study, flying.trial, "FAIL")

    def _halt(self, study: optuna.Study) -> None:
        """Stop: cancel the running trials, wait for them to save their checkpoints, drop the ones never started."""
        from core.train.run_folder import delete_run

        for run_id in self.flight:
            self.registry.cancel(run_id)
        for run_id in list(self.flight):
            with contextlib.suppress(KeyError, TimeoutError):
                self.registry.wait(run_id, timeout=300)
        for run_id, flying in list(self.flight.items()):
            run = self._run_of(run_id)
            if run is None:
                continue
            if run.status == "completed" or flying.pruning:
                self._conclude(study, flying, run)
            elif run.started_at is None:  # queued, never started: dropped (its trial starts afresh on resume)
                delete_run(self.store, self.ws, run_id)
        self.flight.clear()


def open_study(ws: Workspace, search_id: int, spec: SearchSpec) -> optuna.Study:
    """The search's Optuna study (created on first use), with its sampler and pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=SH_MIN_EPOCHS, reduction_factor=SH_REDUCTION)
              if spec.prune else optuna.pruners.NopPruner())  # fmt: skip
    study = optuna.create_study(storage=_storage(ws), study_name=str(search_group(search_id)), load_if_exists=True,
                                direction=metric(spec.metric).direction, pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=spec.seed))  # fmt: skip
    if spec.method == "grid":
        study.sampler = optuna.samplers.GridSampler(spec.space.grid(), seed=spec.seed)
    elif study.trials:  # resumed: a fresh random stream, or it would draw the first trials' settings again
        study.sampler = optuna.samplers.RandomSampler(seed=spec.seed * 100_003 + len(study.trials))
    return study


def _storage(ws: Workspace) -> Any:
    """One Optuna storage per study file and process (opening one checks and migrates its schema)."""
    import optuna

    path = str((ws.root / STUDY_FILE).resolve())
    with _STORAGES_LOCK:
        if path not in _STORAGES:
            _STORAGES[path] = optuna.storages.RDBStorage(f"sqlite:///{path}",
                                                         engine_kwargs={"connect_args": {"timeout": 30}})  # fmt: skip
        return _STORAGES[path]


def _tell(study: optuna.Study, trial: optuna.trial.Trial, state: str, value: float | None = None) -> None:
    import optuna

    try:
        study.tell(trial, value, state=optuna.trial.TrialState[state])
    except RuntimeError as exc:  # GridSampler calls Study.stop() after the last grid point; the state is saved
        if "Study.stop" not in str(exc):  # first (optuna#4121), and stop has no loop to stop here
            raise
