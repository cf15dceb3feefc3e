module warren/examples/go

go 1.19

require (
	github.com/rabbitmq/amqp091-go v1.5.0
	warren/bindings/go/warrentest v0.0.0
)

replace warren/bindings/go/warrentest => ../../bindings/go/warrentest
