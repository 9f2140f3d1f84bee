//! Tally's gRPC API, package `tally.v1`, generated from `proto/tally/v1/*.proto`.

/// The `tally.v1` messages, clients and servers.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("tally.v1");
}

/// The encoded file descriptor set of `tally.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));

/// Tally's error codes on gRPC, both ways: each [`ErrorCode`](tally_core::ErrorCode) is the
/// gRPC status code of the same name. The server answers with [`grpc_code`](codes::grpc_code);
/// clients read answers back with [`error_code`](codes::error_code).
pub mod codes {
    use tally_core::ErrorCode;

    /// The gRPC status code of an error code: the one with the same name.
    pub fn grpc_code(code: ErrorCode) -> tonic::Code {
        match code {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::OutOfRange => tonic::Code::OutOfRange,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        }
    }

    /// The error code a gRPC status code stands for: the inverse of [`grpc_code`]. `None` for
    /// the codes Tally never answers (`CANCELLED`, `UNKNOWN`, ...), which only the transport
    /// produces.
    pub fn error_code(code: tonic::Code) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| grpc_code(*c) == code)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn grpc_codes_map_both_ways_for_every_code() {
            for code in ErrorCode::ALL {
                assert_eq!(error_code(grpc_code(code)), Some(code), "{code}");
                let name = format!("{:?}", grpc_code(code)).to_uppercase();
                assert_eq!(name, code.as_str().replace('_', ""), "the same name");
            }
            assert_eq!(error_code(tonic::Code::Cancelled), None);
            assert_eq!(error_code(tonic::Code::Unknown), None);
        }
    }
}

/// Times on the wire: `google.protobuf.Timestamp` and Tally's microsecond
/// [`Timestamp`](tally_core::Timestamp).
pub mod time {
    use tally_core::Timestamp;

    /// A domain time as a protobuf timestamp.
    pub fn to_proto(t: Timestamp) -> prost_types::Timestamp {
        let micros = t.as_micros();
        prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
        }
    }

    /// Why a protobuf timestamp is no domain time.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum BadTimestamp {
        /// `nanos` outside `0..1e9`.
        Nanos(i32),
        /// Further from 1970 than microseconds in an `i64` reach.
        OutOfRange(i64),
    }

    /// A protobuf timestamp as a domain time (sub-microsecond digits are dropped).
    pub fn from_proto(t: &prost_types::Timestamp) -> Result<Timestamp, BadTimestamp> {
        if !(0..1_000_000_000).contains(&t.nanos) {
            return Err(BadTimestamp::Nanos(t.nanos));
        }
        let micros = t.seconds.checked_mul(1_000_000).and_then(|s| s.checked_add(i64::from(t.nanos / 1000)));
        micros.map(Timestamp::from_micros).ok_or(BadTimestamp::OutOfRange(t.seconds))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times_round_trip_and_bad_ones_are_named() {
            for micros in [0, 1, -1, 1_700_000_000_123_456, -62_135_596_800_000_000] {
                let t = Timestamp::from_micros(micros);
                assert_eq!(from_proto(&to_proto(t)), Ok(t));
            }
            let bad_nanos = prost_types::Timestamp { seconds: 0, nanos: -1 };
            assert_eq!(from_proto(&bad_nanos), Err(BadTimestamp::Nanos(-1)));
            let far = prost_types::Timestamp { seconds: i64::MAX, nanos: 0 };
            assert_eq!(from_proto(&far), Err(BadTimestamp::OutOfRange(i64::MAX)));
        }
    }
}

/// The codec of every `tally.v1` service: tonic's protobuf codec, except that a message that
/// does not decode (malformed protobuf, a string that is not UTF-8) is `INVALID_ARGUMENT`.
///
/// tonic answers `INTERNAL`, as gRPC's own libraries do. Tally's error vocabulary gives
/// `INTERNAL` a meaning a client must act on: the operation may have been applied, so a
/// mutation must be retried with its token. A request that does not decode was never applied,
/// and it is the sender's to fix: `INVALID_ARGUMENT`, like every other bad input. (A client
/// decoding a reply it cannot read gets the same code.)
pub mod codec {
    use std::marker::PhantomData;

    use tonic::Status;
    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
    use tonic_prost::ProstCodec;

    /// See the module docs.
    #[derive(Debug, Clone)]
    pub struct StrictCodec<T, U> {
        inner: ProstCodec<T, U>,
        _types: PhantomData<(T, U)>,
    }

    impl<T, U> Default for StrictCodec<T, U> {
        fn default() -> Self {
            Self { inner: ProstCodec::default(), _types: PhantomData }
        }
    }

    impl<T, U> Codec for StrictCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
        type Decoder = StrictDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

        fn encoder(&mut self) -> Self::Encoder {
            self.inner.encoder()
        }

        fn decoder(&mut self) -> Self::Decoder {
            StrictDecoder(self.inner.decoder())
        }
    }

    /// The decoder of [`StrictCodec`].
    #[derive(Debug)]
    pub struct StrictDecoder<D>(D);

    impl<D: Decoder<Error = Status>> Decoder for StrictDecoder<D> {
        type Item = D::Item;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
            self.0.decode(buf).map_err(|e| {
                Status::invalid_argument(format!("the message does not decode: {}", e.message()))
            })
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }
}
