//! Space errors as the errno a program sees. Whatever has no better match is
//! EIO, and its reason goes to the log, because EIO alone tells a user nothing.

use libc::c_int;
use p3_objectspace::SpaceError;

/// The errno for `error`, logging the reason of the ones that lose it.
pub fn errno(operation: &str, path: &str, error: &SpaceError) -> c_int {
    let code = match error {
        SpaceError::NotFound(_) | SpaceError::NoSuchNamespace(_) => return libc::ENOENT,
        SpaceError::NamespaceExists(_) => libc::EEXIST,
        SpaceError::VersionConflict { .. } => libc::EAGAIN,
        SpaceError::TooLarge { .. } | SpaceError::VolatileTooLarge { .. } => libc::EFBIG,
        SpaceError::InvalidName(_) | SpaceError::Invalid(_) => libc::EINVAL,
        SpaceError::Fenced(_) => libc::EBUSY,
        // A mount on a node that is not a writer of a writer-only namespace.
        SpaceError::Forbidden(_) => libc::EACCES,
        SpaceError::NotEnoughOwners { .. }
        | SpaceError::Unavailable(_)
        | SpaceError::OutcomeUnknown(_)
        | SpaceError::TimedOut(_)
        | SpaceError::Locked { .. }
        | SpaceError::Corrupt(_)
        | SpaceError::Storage(_)
        | SpaceError::Stopped => libc::EIO,
    };
    tracing::warn!(%operation, %path, %error, errno = code, "operation failed");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_errno_programs_expect() {
        assert_eq!(
            errno("t", "p", &SpaceError::NotFound("x".into())),
            libc::ENOENT
        );
        assert_eq!(
            errno("t", "p", &SpaceError::Unavailable("down".into())),
            libc::EIO
        );
        assert_eq!(
            errno("t", "p", &SpaceError::TimedOut("slow".into())),
            libc::EIO
        );
        assert_eq!(
            errno("t", "p", &SpaceError::Fenced("locked".into())),
            libc::EBUSY
        );
        assert_eq!(
            errno("t", "p", &SpaceError::TooLarge { size: 2, max: 1 }),
            libc::EFBIG
        );
    }
}
