//! The calling thread's CPU time, for latency figures on a busy machine:
//! with one LibTorch thread every op of a batch-1 decode runs on the calling
//! thread, so its CPU time is the decode's cost without the waits for other
//! processes that inflate wall-clock time when cores are shared (the timing
//! of [`crate::DecodeStats`] and the NAT benchmarks).

/// Seconds of CPU time the calling thread has used (Linux:
/// `CLOCK_THREAD_CPUTIME_ID`; elsewhere wall-clock time since first use).
pub fn thread_cpu_seconds() -> f64 {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Timespec {
            tv_sec: i64,
            tv_nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the pointer given.
        if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_not_with_sleep() {
        let t0 = thread_cpu_seconds();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t1 = thread_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        let t2 = thread_cpu_seconds();
        assert!(t1 - t0 < 0.04, "sleeping used {} s of CPU", t1 - t0);
        assert!(t2 > t1);
    }
}
