"""Named constants of the simulated machine, each with its source (docs/simulator.md explains them).

Figures marked *assumption* are modelling choices that no paper pins down; they were set so that the
magnitudes of the knobs' effects match published results (DESIGN §4) and are listed in the calibration
section of docs/simulator.md.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
BASE_PAGE = 4 * KIB  #: the kernel counts /proc/vmstat events in 4 KiB base pages
BASE_PAGES_PER_MB = MIB // BASE_PAGE

CACHE_LINE = 64  #: bytes moved per memory access (one LLC miss)

# -- loaded latency -----------------------------------------------------------------------------------
#: Loaded latency L(u) = L0 * (1 + K * u / (1 - u)), an M/M/1-like curve. K = 0.12 gives 2x idle latency at
#: 90% utilisation and ~7x at 98%, so a saturated DRAM tier (90 ns idle) becomes up to 2.5x slower than a
#: 250 ns CXL tier, the inversion Colloid (SOSP'24, Vuppalapati & Agarwal) reports. *assumption* for K.
LOADED_LATENCY_K = 0.12
#: Utilisation is clipped below 1 so the curve stays finite; 0.995 bounds L at ~25x idle.
MAX_UTILISATION = 0.995

# -- NUMA balancing (kernel/sched/fair.c, mm/page_alloc.c of Linux 6.x) -----------------------------
MAX_SCAN_WINDOW_MB = 2560  #: task_scan_min(): never scan more than 2.56 GB/s of PTEs
SCAN_VIRT_FACTOR = 8  #: task_numa_work(): virtpages = 8 * pages, the bound on skipped ranges
NUMA_PERIOD_SLOTS = 10  #: update_task_scan_period()
NUMA_PERIOD_THRESHOLD = 7
NUMA_MIGRATION_ADJUST_STEPS = 16  #: numa_promotion_adjust_threshold()
RATE_LIMIT_WINDOW_S = 1.0  #: numa_promotion_rate_limit() counts candidates per 1 s window
FREE_ENOUGH_MIN_BYTES = 1 * GIB  #: pgdat_free_space_enough(): max(1 GiB, node/16) above high wmark
FREE_ENOUGH_NODE_SHIFT = 4
MIN_FREE_KBYTES_MAX = 262144  #: calculate_min_free_kbytes(): int_sqrt(lowmem_kbytes * 16), capped
WSF_MIN, WSF_MAX = 1, 3000  #: watermark_scale_factor range since ~5.17

# -- costs charged to the workload (thread-seconds per event) ---------------------------------------
#: A NUMA hint fault (trap, task_numa_fault bookkeeping, PTE fix-up), no migration: ~1 us. *assumption*,
#: consistent with minor-fault costs of 0.5-1.5 us on current x86 servers.
HINT_FAULT_COST_S = 1.0e-6
#: change_prot_numa() per PTE (4 KiB) or per PMD (2 MiB THP), including the TLB flush share. *assumption*
SCAN_COST_PER_PTE_S = 10e-9
SCAN_COST_PER_PMD_S = 0.25e-6
#: move_pages(): 3.9 us per 4 KiB page batched, ~660 us per 2 MiB THP (DESIGN §4, THP migration series 2017).
USER_MIGRATE_4K_S = 3.9e-6
USER_MIGRATE_2M_S = 660e-6
#: In-kernel migration (fault-path promotion, kswapd demotion) skips the system call, the page-list copy
#: and the per-page lookup: 0.8x of move_pages. *assumption*
KERNEL_MIGRATE_FACTOR = 0.8
#: Share of kswapd's and the UPM daemon's migration time that the workload pays (they run on other CPUs;
#: the workload pays TLB shootdowns, LRU/page-lock contention and accesses that wait on a page under
#: migration). *assumption*
KSWAPD_APP_SHARE = 0.25
UPM_APP_SHARE = 0.5
#: A page under migration is unmapped (migration entry): every access to it during the copy waits
#: (migration_entry_wait). Expected stall per migrated frame = copy time / 2 x accesses arriving during
#: the copy, at most one per other thread. Hot THPs touched by all threads make migration expensive.
MIGRATION_STALL_SHARE = 0.5
#: One PEBS sample: microcode assist plus buffer drain on the sampled thread. ~0.25 us. *assumption*
#: (PEBS assist costs of 100s of ns are reported by HeMem, SOSP'21, and MEMTIS, SOSP'23.)
PEBS_SAMPLE_COST_S = 0.25e-6
#: Throughput of one migrating context (bytes/s): 4 KiB pages ~1 GB/s, 2 MiB THP ~3 GB/s (DESIGN §4).
MIGRATE_BPS_4K = 1.0e9
MIGRATE_BPS_2M = 3.0e9

# -- Colloid (SOSP'24) ------------------------------------------------------------------------------
COLLOID_QUANTUM_S = 0.5  #: Colloid's sampling/migration quantum
COLLOID_DELTA_PERCENT = 5  #: default step (compile-time on real kernels)
COLLOID_EPSILON_PERCENT = 1  #: default latency tolerance (compile-time on real kernels)

# -- measurement -----------------------------------------------------------------------------------
DEFAULT_NOISE = 0.02  #: relative standard deviation of the objective per advance
