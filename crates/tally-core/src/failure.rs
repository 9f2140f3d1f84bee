//! A failure of a layer below Tally (the disk, a database driver, memcached), kept with the
//! error that caused it.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// What failed, in words that name the operation and its input, and the error of the layer
/// below that said why.
///
/// The cause is shared (`Arc`) so that one failed group commit answers every request of its
/// batch with the same failure, and it stays what it was: [`Error::source`] gives it back, so
/// a caller can `downcast_ref` it (to an `std::io::Error`, say) instead of reading prose.
/// The message (`Display`) is the whole story in one line, cause included, because that line
/// is what clients and logs get.
#[derive(Clone)]
pub struct Failure {
    context: String,
    cause: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Failure {
    /// A failure with no error underneath (a condition the store noticed itself).
    pub fn new(context: impl Into<String>) -> Self {
        Self { context: context.into(), cause: None }
    }

    /// A failure of `context` that `cause`, the layer below's error, explains (any error
    /// type, or a message where the layer below gives no more).
    pub fn caused_by(
        context: impl Into<String>,
        cause: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> Self {
        Self { context: context.into(), cause: Some(Arc::from(cause.into())) }
    }

    /// The same failure, seen from the operation `outer` that it failed.
    pub fn within(self, outer: &str) -> Self {
        Self { context: format!("{outer}: {}", self.context), cause: self.cause }
    }

    /// What failed, without the cause.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The layer below's error, if any, to inspect with `downcast_ref`.
    pub fn cause(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        match &self.cause {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure").field("context", &self.context).field("cause", &self.cause).finish()
    }
}

impl Error for Failure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|cause| cause as &(dyn Error + 'static))
    }
}

/// Two failures are equal when they say the same thing: what failed and why, as printed.
impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Failure {}

impl From<String> for Failure {
    fn from(context: String) -> Self {
        Self::new(context)
    }
}

impl From<&str> for Failure {
    fn from(context: &str) -> Self {
        Self::new(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_printed_and_can_be_recovered_by_type() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device");
        let failure = Failure::caused_by("committing 3 events", io).within("embedded store");
        assert_eq!(failure.to_string(), "embedded store: committing 3 events: no space left on device");
        let cause = failure.source().and_then(|c| c.downcast_ref::<std::io::Error>()).expect("an io::Error");
        assert_eq!(cause.kind(), std::io::ErrorKind::StorageFull);
        let copy = failure.clone();
        assert_eq!(copy, failure, "a shared copy is the same failure");
        assert!(Failure::new("x").source().is_none());
    }
}
