//! Tally's gRPC API, package `tally.v1`, generated from `proto/tally/v1/*.proto`.

/// The `tally.v1` messages, clients and servers.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("tally.v1");
}

/// The encoded file descriptor set of `tally.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));

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
