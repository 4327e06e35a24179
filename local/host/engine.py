"""The durable engine's scheduling: which episode runs next, activities on a bounded pool, timers.

Three loops share the event loop:
- the orchestration loop takes ready instances and runs an episode for each. With one worker
  process (FUNCTIONS_WORKER_PROCESS_COUNT=1, the default) episodes run one at a time in this
  process. With several, the orchestrator calls of *different* instances replay in parallel in
  the worker processes (``replay_workers.py``) while this process reads and commits; an instance
  woken while its episode is in flight runs again once that episode is committed, so episodes of
  one instance are never concurrent. Many instances are in flight either way, because an episode
  only schedules work and returns;
- each activity runs as its own task, bounded by ``max_activities`` (host.json's
  maxConcurrentActivityFunctions), and commits its result to the inbox before the orchestrator
  can see it. With worker processes the function itself runs in one of them (as on Azure); an
  activity whose worker died was never completed and runs again. Without, it runs on this
  process's thread pool (async ones on its loop);
- the timer loop sleeps until the earliest durable timer is due on the host clock.

On start the engine recovers from whatever the store holds: instances with inbox items are ready,
every activity row is a scheduled activity without a result (run again: at-least-once), and timers
are simply still in their table.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from local.host import history
from local.host.activity_call import ActivityOutcome, call_async_activity
from local.host.clock import HostClock, from_epoch, to_iso, wait_for_event
from local.host.episode import EpisodeResult, EpisodeRunner, PendingReplay
from local.host.failures import missing_activity_failure
from local.host.function_index import FunctionIndex
from local.host.invoker import Invoker
from local.host.replay_workers import ReplayWorkers, WorkerDied
from local.host.shared_commits import SharedCommitRolledBack, SharedCommits
from local.host.store import TERMINAL_STATUSES, ActivityItem, Store
from local.host.versioning import VersioningSettings

logger = logging.getLogger(__name__)

# The timer loop re-checks at least this often, so a lost wake-up can only delay a timer a little.
MAX_TIMER_SLEEP_SECONDS = 30.0
# Episodes in flight per worker process: one replaying, one prepared and waiting in the pool's queue.
EPISODES_PER_WORKER = 2


class DurableEngine:
    """Runs episodes, activities and timers for one task hub."""

    def __init__(
        self,
        store: Store,
        index: FunctionIndex,
        clock: HostClock,
        *,
        invoker: Invoker,
        max_activities: int,
        workers: ReplayWorkers | None = None,
        versioning: VersioningSettings | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.clock = clock
        self.invoker = invoker
        self.max_activities = max_activities
        self.runner = EpisodeRunner(store, index, clock, versioning=versioning)
        self.workers = workers
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        # Instances whose episode is in flight, and those of them woken meanwhile (run again after).
        self._in_flight: set[str] = set()
        self._woken_in_flight: set[str] = set()
        self._episodes: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_activities)
        self._executor = ThreadPoolExecutor(max_workers=max_activities, thread_name_prefix="activity")
        self._timer_wakeup = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._activities: set[asyncio.Task[None]] = set()
        # Episode commits (with worker processes) and activity results ready in the same loop
        # iteration share one transaction.
        self._commits = SharedCommits(store)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.episodes_run = 0
        self.activities_run = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.workers is not None:
            await self.workers.start()
        latest = self.store.max_updated_at()
        if latest is not None:
            # After a restart the host clock must not run behind what orchestrations already saw.
            self.clock.not_before(latest)
        self.clock.on_jump(self._on_clock_jump)
        recovered = self.store.instances_with_inbox()
        for instance_id in recovered:
            self.wake(instance_id)
        pending = self.store.pending_activities()
        for item in pending:
            self._dispatch_activity(item)
        if recovered or pending:
            logger.info(
                "recovered %d instances with pending events and %d activities without a result",
                len(recovered),
                len(pending),
            )
        self._loops = [
            asyncio.create_task(self._orchestration_loop(), name="orchestrations"),
            asyncio.create_task(self._timer_loop(), name="durable-timers"),
        ]

    async def stop(self) -> None:
        # Writes still queued are dropped: their events stay in the inbox, their activities run again.
        self._commits.close()
        for task in [*self._loops, *self._episodes, *self._activities]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._episodes, *self._activities, return_exceptions=True)
        # Activities still running in threads are abandoned; their rows stay and run again on restart.
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.workers is not None:
            # Replays in flight are dropped uncommitted: their events are still in the inbox.
            self.workers.stop()

    def wake(self, instance_id: str) -> None:
        if instance_id not in self._queued:
            self._queued.add(instance_id)
            self._ready.put_nowait(instance_id)

    def timers_changed(self) -> None:
        self._timer_wakeup.set()

    def _on_clock_jump(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._timer_wakeup.set)

    # -- orchestrations ---------------------------------------------------------------------------
    async def _orchestration_loop(self) -> None:
        if self.workers is not None:
            await self._parallel_orchestration_loop(self.workers)
            return
        while True:
            instance_id = await self._ready.get()
            self._queued.discard(instance_id)
            started = time.perf_counter()
            try:
                result = self.runner.run(instance_id)
            except Exception as exc:
                self._episode_failed(instance_id, exc)
                await asyncio.sleep(0.5)
                continue
            if result is not None:
                self._after_episode(result, (time.perf_counter() - started) * 1000)
            # Let HTTP handlers and activity completions run between episodes.
            await asyncio.sleep(0)

    async def _parallel_orchestration_loop(self, workers: ReplayWorkers) -> None:
        slots = asyncio.Semaphore(workers.count * EPISODES_PER_WORKER)
        while True:
            instance_id = await self._ready.get()
            self._queued.discard(instance_id)
            if instance_id in self._in_flight:
                self._woken_in_flight.add(instance_id)
                continue
            await slots.acquire()
            self._in_flight.add(instance_id)
            task = asyncio.create_task(self._parallel_episode(instance_id, workers, slots))
            self._episodes.add(task)
            task.add_done_callback(self._episodes.discard)

    async def _parallel_episode(
        self, instance_id: str, workers: ReplayWorkers, slots: asyncio.Semaphore
    ) -> None:
        started = time.perf_counter()
        try:
            step = self.runner.prepare(instance_id)
            if isinstance(step, PendingReplay):
                answer = None
                if step.name in self.index.orchestrators:
                    answer = await workers.replay(step.name, step.context_json, affinity=instance_id)
                step = await self._commits.write(functools.partial(self.runner.finish, step, answer))
            if step is not None:
                self._after_episode(step, (time.perf_counter() - started) * 1000)
        except asyncio.CancelledError:
            raise
        except (WorkerDied, SharedCommitRolledBack) as exc:
            # Nothing was committed: the episode runs again (in another worker).
            self._episode_failed(instance_id, exc)
            self._woken_in_flight.add(instance_id)
        except Exception as exc:
            self._episode_failed(instance_id, exc)
            await asyncio.sleep(0.5)
        finally:
            self._in_flight.discard(instance_id)
            slots.release()
        if instance_id in self._woken_in_flight:
            self._woken_in_flight.discard(instance_id)
            self.wake(instance_id)

    def _episode_failed(self, instance_id: str, exc: Exception) -> None:
        # A host bug, a storage failure or a dead worker: keep serving, the inbox still holds the events.
        logger.error("episode for instance %s failed inside the host: %s", instance_id, type(exc).__name__)
        logger.debug("episode failure", exc_info=exc)

    def _after_episode(self, result: EpisodeResult, elapsed_ms: float) -> None:
        if result.rejected is not None:
            # Not retried by this host (its version never changes): a newer one runs the events.
            logger.warning(
                "episode %s [%s] left queued: %s", result.name, result.instance_id, result.rejected
            )
            return
        self.episodes_run += 1
        for item in result.activities:
            self._dispatch_activity(item)
        for other in result.wake:
            self.wake(other)
        if result.more:
            self.wake(result.instance_id)
        if result.timers_changed:
            self._timer_wakeup.set()
        logger.info(
            "episode %s [%s] delivered %d, scheduled %d, now %s (%.1f ms)",
            result.name,
            result.instance_id,
            result.delivered,
            result.scheduled,
            result.status,
            elapsed_ms,
        )

    # -- activities -------------------------------------------------------------------------------
    def dispatch_activity(self, item: ActivityItem) -> None:
        """Run a committed activity work item (used by rewind, which re-schedules failed work)."""
        self._dispatch_activity(item)

    def _dispatch_activity(self, item: ActivityItem) -> None:
        task = asyncio.create_task(self._run_activity(item), name=f"activity-{item.id}")
        self._activities.add(task)
        task.add_done_callback(self._activities.discard)

    async def _run_activity(self, item: ActivityItem) -> None:
        while True:
            async with self._slots:
                started = time.perf_counter()
                try:
                    event, outcome = await self._execute_activity(item)
                except WorkerDied:
                    # Never completed, as when the real host loses a worker: it runs again.
                    logger.warning(
                        "activity %s [%s task %d] lost with its worker process; running it again",
                        item.name,
                        item.instance_id,
                        item.task_id,
                    )
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
            break
        # Committed before its orchestrator can see it; results that finish together share the commit.
        delivered = await self._commits.write(
            functools.partial(self._commit_result, item, event), retry_alone=True
        )
        if delivered:
            self.wake(item.instance_id)
        self.activities_run += 1
        logger.info(
            "activity %s [%s task %d] %s (%.1f ms)%s",
            item.name,
            item.instance_id,
            item.task_id,
            outcome,
            elapsed_ms,
            "" if delivered else ", result dropped: the instance moved on",
        )

    def _commit_result(self, item: ActivityItem, event: dict[str, Any]) -> bool:
        # The row is gone if the instance ended (terminated, failed) while the activity ran.
        if not self.store.delete_activity(item.id):
            return False
        version = self.store.instance_version(item.instance_id)
        if version is None or version[0] != item.execution_id or version[1] in TERMINAL_STATUSES:
            return False
        self.store.add_inbox(item.instance_id, item.execution_id, event)
        return True

    async def _execute_activity(self, item: ActivityItem) -> tuple[dict[str, Any], str]:
        """The activity's TaskCompleted or TaskFailed event and a word for the log; raises
        WorkerDied if the worker process running it ended first."""
        entry = self.index.activities.get(item.name)
        if entry is None:
            reason, details = missing_activity_failure(item.name)
            return history.task_failed(
                self._timestamp(), item.task_id, reason=reason, details=details
            ), "failed"
        outcome: ActivityOutcome
        if self.workers is not None:
            outcome = await self.workers.run_activity(
                item.name, item.input, self.invoker.binding_kwargs(entry)
            )
        else:
            outcome = await call_async_activity(
                item.name,
                item.input,
                functools.partial(self.invoker.call, entry, executor=self._executor),
            )
        if outcome.failure is not None:
            reason, details = outcome.failure
            event = history.task_failed(self._timestamp(), item.task_id, reason=reason, details=details)
        else:
            event = history.task_completed(self._timestamp(), item.task_id, outcome.result)
        return event, outcome.summary

    def _timestamp(self) -> str:
        return to_iso(self.clock.now())

    # -- durable timers ---------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            self._timer_wakeup.clear()
            try:
                woken = self._fire_due_timers()
            except Exception as exc:
                logger.error("firing durable timers failed: %s", type(exc).__name__)
                woken = set()
            for instance_id in woken:
                self.wake(instance_id)
            next_at = self.store.next_timer_at()
            timeout = MAX_TIMER_SLEEP_SECONDS
            if next_at is not None:
                timeout = min(timeout, self.clock.wall_seconds_until(next_at))
            if timeout <= 0:
                await asyncio.sleep(0)
                continue
            await wait_for_event(self._timer_wakeup, timeout)

    def _fire_due_timers(self) -> set[str]:
        now = self.clock.now_epoch()
        due = self.store.due_timers(now)
        if not due:
            return set()
        woken: set[str] = set()
        timestamp = to_iso(from_epoch(now))
        with self.store.transaction():
            for timer in due:
                self.store.delete_timer(timer.id)
                instance = self.store.get_instance(timer.instance_id)
                if instance is None or instance.is_terminal or instance.execution_id != timer.execution_id:
                    continue
                event = history.timer_fired(timestamp, timer.timer_id, timer.fire_at_text)
                self.store.add_inbox(timer.instance_id, timer.execution_id, event)
                woken.add(timer.instance_id)
        for instance_id in woken:
            logger.info("durable timer fired for instance %s", instance_id)
        return woken
