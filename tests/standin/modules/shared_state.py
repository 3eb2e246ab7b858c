"""Stand-in of ``modules.shared_state.State``: the flags and counters sampling reads and writes."""

from __future__ import annotations


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    processing_has_refined_job_count = False
    job_timestamp = '0'
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    current_image = None
    id_live_preview = 0
    textinfo = None
    time_start = None
    server_start = None

    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def stop_generating(self) -> None:
        self.stopping_generation = True

    def nextjob(self) -> None:
        self.job_no += 1
        self.sampling_step = 0

    def begin(self, job: str = "(unknown)") -> None:
        self.sampling_step = 0
        self.job_count = -1
        self.job_no = 0
        self.current_latent = None
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job = job

    def end(self) -> None:
        self.job = ""
        self.job_count = 0

    def assign_current_image(self, image) -> None:
        self.current_image = image
