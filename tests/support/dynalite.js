#!/usr/bin/env node
// Starts dynalite, an in-memory DynamoDB-compatible server, on 127.0.0.1 with a
// free port, and prints "listening on <port>" once it accepts connections.
//
// The server exits when its standard input closes, so a test process or demo
// script that dies without cleaning up never leaves a server behind.
'use strict'

const dynalite = require('dynalite')

// Tables become ACTIVE at once, so that tests need not wait for them.
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 })

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on ${server.address().port}\n`)
})

process.stdin.on('data', () => {})
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
