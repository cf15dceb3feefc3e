import pika

# Connect to RabbitMQ
connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
channel = connection.channel()

# Declare an exchange
channel.exchange_declare(exchange='logs', exchange_type='fanout')

# Publish messages
message = 'info: Hello World!'
channel.basic_publish(exchange='logs', routing_key='', body=message)

print(f" [x] Sent {message}")

# Close the connection
connection.close()
