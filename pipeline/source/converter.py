"""What ``kafka.format`` means on both ends: the connector's converters in
Kafka Connect (:func:`record_format`) and the worker's (:func:`converter_for`)."""

from __future__ import annotations

from pipeline.source.avro_converter import AvroConverter
from pipeline.source.json_converter import JsonConverter
from pipeline.source.records import Converter
from pipeline.source.registry import SchemaRegistry
from pipeline.sourceconfig import ConnectConfig, KafkaConfig


def converter_for(kafka: KafkaConfig, quick: bool = False) -> Converter:
    """A new converter for the records the connector writes (one per thread).

    ``quick``: a registry that does not answer is asked once, 3 s at most,
    not waited for (a reader of figures, never the pipeline's records).
    """
    if kafka.format == "avro":
        registry = SchemaRegistry.of(kafka)
        if quick:
            registry.timeout_s, registry.retry_for_s = 3.0, 0.0
        return AvroConverter(registry)
    return JsonConverter()


#: Apicurio Registry's Kafka Connect converter (``kafka.format: avro``).
AVRO_CONVERTER = "io.apicurio.registry.utils.converter.AvroConverter"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


def record_format(kafka: KafkaConfig, connect: ConnectConfig) -> dict[str, str]:
    """The connector's key and value converters for ``kafka.format``.

    ``avro``: Apicurio's converter registers each schema it meets (``auto-
    register``) and writes the Confluent wire format — magic byte 0, the
    schema's 4-byte content id, the Avro datum — with the id in the payload,
    not in headers (Apicurio 2.x's default; its own format would carry an
    8-byte global id). Any Confluent-compatible reader can decode that, and
    the worker reads schemas through the registry's ccompat API
    (:mod:`pipeline.source.registry`). While the registry is down the
    connector goes on with the schemas it has resolved; a new schema, of a
    table altered meanwhile, fails its task, which the workers restart once
    the registry answers (:mod:`pipeline.taskheal`). The
    converter logs in to the registry as ``connect.registry_username``, its
    password a config-provider reference Connect resolves. Schema
    names are made Avro-safe
    (``schema.name.adjustment.mode``); column names are not adjusted, as
    they are the documents' field names.
    """
    if kafka.format == "json":
        return {
            "key.converter": JSON_CONVERTER,
            "value.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": "true",
            "value.converter.schemas.enable": "true",
        }
    url = kafka.schema_registry_url.rstrip("/") + "/apis/registry/v2"
    settings = {"schema.name.adjustment.mode": "avro"}
    for side in ("key", "value"):
        pre = f"{side}.converter"
        settings |= {
            pre: AVRO_CONVERTER,
            f"{pre}.apicurio.registry.url": url,
            f"{pre}.apicurio.registry.auto-register": "true",
            f"{pre}.apicurio.registry.find-latest": "true",
            f"{pre}.apicurio.registry.as-confluent": "true",
            f"{pre}.apicurio.registry.use-id": "contentId",
            f"{pre}.apicurio.registry.id-handler": (
                "io.apicurio.registry.serde.Legacy4ByteIdHandler"
            ),
            f"{pre}.apicurio.registry.headers.enabled": "false",
            # A registry outage: the schemas already resolved keep being
            # used when their cache entry is refreshed (Apicurio's default
            # fails the record, and Connect then kills the task for good).
            f"{pre}.apicurio.registry.fault-tolerant-refresh": "true",
        }
        if connect.registry_username is not None:
            settings |= {
                f"{pre}.apicurio.auth.username": connect.registry_username,
                f"{pre}.apicurio.auth.password": str(connect.registry_password_ref),
            }
    return settings
