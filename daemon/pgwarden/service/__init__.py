"""The daemon (see DESIGN.md, process model).

``daemon`` (the process: start-up, main loop, signals, threads, sd_notify via ``sdnotify``),
``core`` (the service: jobs, schedules, pauses, reload decisions), ``api`` (the service as the
control socket sees it), ``jobs`` (the job pool, job states), ``jobkinds`` (what each kind runs
and leads to), ``outcomes`` (metrics from typed outcomes and the catalog), ``scheduler`` and
``clock``, ``state`` (the config in force, catalog, storage), ``recovery`` (start-up clean-up),
``pauses`` and ``reload`` (requests from other threads).
"""
