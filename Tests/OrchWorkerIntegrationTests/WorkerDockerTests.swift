import Foundation
import NIOCore
import NIOPosix
import OrchCore
import OrchRuntime
import OrchTestSupport
import OrchWire
@testable import OrchWorker
import Testing

@Suite("Worker with a test peer (Docker)", .serialized, .timeLimit(.minutes(3)))
struct WorkerDockerTests {
    @Test func anAssignmentBecomesARunningContainerAndItsStatusArrives() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            let hello = try await harness.waitForConnection(1, &events)
            #expect(hello.nodeID == harness.worker.node)
            #expect(hello.capacity.millicores > 0 && hello.capacity.memoryBytes > 0)
            #expect(hello.addresses.first?.hasPrefix("127.0.0.1:") == true && hello.addresses.first != "127.0.0.1:0",
                    "the hello carries the API's real address")
            let beat = try await events.next("a heartbeat with metrics") { if case .message(_, .heartbeat(let beat)) = $0 { beat } else { nil } }
            #expect(beat.metrics.memoryTotalBytes > 0)

            let task = TaskID(rawValue: "web-\(UUID().uuidString.prefix(6).lowercased())")
            try await harness.assign(task, TaskSpec(image: testImage, ports: [PortSpec(containerPort: 8080)]))
            let running = try await waitForStatus(&events, task, "running") { $0.state == .running }
            let container = try #require(running.container)
            let port = try #require(running.ports.first)
            #expect(port.containerPort == 8080 && port.hostIP == "127.0.0.1" && port.hostPort > 0)
            let info = try await harness.runtime.inspect(container)
            #expect(info.running)
            #expect(info.labels[ContainerLabel.node] == harness.worker.node.rawValue)
            #expect(info.labels[ContainerLabel.task] == task.rawValue && info.labels[ContainerLabel.attempt] == "1")
            // The container answers on the published port.
            let page = try await httpWhenUp("http://127.0.0.1:\(port.hostPort)/")
            #expect(page.contains("hello from orch-busybox"))
            #expect(harness.statuses(of: task).map(\.state) == [.running], "one status so far, in order")
            let ids = harness.statuses(of: task).map(\.statusID)
            #expect(ids == ids.sorted())
        }
    }

    @Test func theSameAssignmentSentTwiceStartsOneContainer() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "twice")
            try await harness.assign(task, sleeper())
            try await harness.assign(task, sleeper())
            _ = try await waitForStatus(&events, task, "running") { $0.state == .running }
            try await harness.assign(task, sleeper())
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await harness.containers(of: task).count == 1)
            #expect(await harness.worker.tasks().count == 1)
        }
    }

    @Test func aTaskThatExitsNonZeroIsReportedFailedWithItsCode() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "fails")
            try await harness.assign(task, TaskSpec(image: testImage, command: ["sh", "-c", "sleep 0.3; exit 3"]))
            let failed = try await waitForStatus(&events, task, "failed") { $0.state.isTerminal }
            #expect(failed.state == .failed)
            #expect(failed.exitCode == 3)
            #expect(harness.statuses(of: task).map(\.state) == [.running, .failed])
        }
    }

    @Test func anImageThatCannotBeHadIsReportedFailedWithDockersError() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "no-image")
            try await harness.assign(task, TaskSpec(image: "orch-no-such-image-\(UUID().uuidString.prefix(6).lowercased()):1"))
            let failed = try await waitForStatus(&events, task, "failed") { $0.state.isTerminal }
            #expect(failed.state == .failed)
            #expect(failed.error?.contains("orch-no-such-image") == true, "error: \(failed.error ?? "none")")
            #expect(try await harness.containers(of: task).isEmpty)
        }
    }

    @Test func aCommandTheImageDoesNotHaveEndsAsAClearTaskError() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "no-command")
            try await harness.assign(task, TaskSpec(image: testImage, command: ["orch-no-such-command"]))
            let failed = try await waitForStatus(&events, task, "failed") { $0.state.isTerminal }
            #expect(failed.state == .failed)
            #expect(failed.error?.contains("orch-no-such-command") == true, "error: \(failed.error ?? "none")")
            // The worker goes on: the next task runs.
            let next = TaskID(rawValue: "after-no-command")
            try await harness.assign(next, sleeper())
            _ = try await waitForStatus(&events, next, "running") { $0.state == .running }
        }
    }

    @Test func aHostPortAlreadyInUseEndsAsAClearTaskError() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            // Something else holds the port on the address the worker publishes on.
            let holder = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
            defer { holder.close(promise: nil) }
            let port = try #require(holder.localAddress?.port)
            let task = TaskID(rawValue: "port-taken")
            try await harness.assign(task, TaskSpec(image: testImage, ports: [PortSpec(containerPort: 8080, hostPort: port)]))
            let failed = try await waitForStatus(&events, task, "failed") { $0.state.isTerminal }
            #expect(failed.state == .failed)
            #expect(failed.error?.contains("\(port)") == true, "the error names the port: \(failed.error ?? "none")")
            let removedBy = ContinuousClock.now + .seconds(10)
            while try await !harness.containers(of: task).isEmpty, ContinuousClock.now < removedBy { try await Task.sleep(for: .milliseconds(100)) }
            #expect(try await harness.containers(of: task).isEmpty, "its container is removed")
            let next = TaskID(rawValue: "after-port-taken")
            try await harness.assign(next, sleeper())
            _ = try await waitForStatus(&events, next, "running") { $0.state == .running }
        }
    }

    @Test func aStopRequestStopsTheTaskWithinASecond() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "stopped")
            try await harness.assign(task, sleeper())
            _ = try await waitForStatus(&events, task, "running") { $0.state == .running }
            // Docker reports a container started before its init has started the command; a
            // SIGTERM in that instant is lost and the stop waits for its SIGKILL.
            try await Task.sleep(for: .milliseconds(300))
            let clock = ContinuousClock()
            let asked = clock.now
            try await harness.stop(task)
            let done = try await waitForStatus(&events, task, "completed") { $0.state.isTerminal }
            let took = clock.now - asked
            #expect(done.state == .completed, "a user stop completes, whatever the exit code")
            #expect(took < .seconds(1), "stopped in \(took)")
            #expect(harness.statuses(of: task).map(\.state) == [.running, .stopping, .completed])
            let deadline = clock.now + .seconds(5)
            while try await !harness.containers(of: task).isEmpty, clock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await harness.containers(of: task).isEmpty, "a stopped task's container is removed")
        }
    }

    @Test func aStopRightBehindItsAssignmentIsHandledAfterIt() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            for index in 0..<5 {
                let task = TaskID(rawValue: "hasty-\(index)")
                try await harness.assign(task, sleeper())
                try await harness.stop(task)
            }
            for index in 0..<5 {
                let task = TaskID(rawValue: "hasty-\(index)")
                let done = try await awaitStatus(harness.peer, task, "completed") { $0.state.isTerminal }
                #expect(done.state == .completed, "\(task) stopped, not left running")
            }
            let deadline = ContinuousClock.now + .seconds(20)
            while try await !harness.runtime.list(labels: [ContainerLabel.node: harness.worker.node.rawValue]).isEmpty,
                  ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await harness.runtime.list(labels: [ContainerLabel.node: harness.worker.node.rawValue]).isEmpty)
        }
    }

    @Test func aStopForAnAttemptThatIsNotCurrentIsHarmless() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "keeps-running")
            try await harness.assign(task, attempt: 2, sleeper())
            _ = try await waitForStatus(&events, task, "running") { $0.state == .running }
            try await harness.stop(task, attempt: 1)
            try await harness.stop(TaskID(rawValue: "unknown"), attempt: 1)
            try await Task.sleep(for: .milliseconds(500))
            #expect(harness.statuses(of: task).map(\.state) == [.running])
            #expect(try await harness.containers(of: task).first?.state == "running")
        }
    }

    @Test func aHealthCheckTurnsHealthyThenUnhealthyWhenTheHealthPageGoes() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "health")
            // The fixture serves /health for about two seconds, then removes it and lives on.
            let spec = TaskSpec(
                image: testImage, command: ["sh", "-c", "httpd -f -p 8080 -h /www & sleep 2; rm /www/health; wait"],
                ports: [PortSpec(containerPort: 8080)],
                healthCheck: HealthCheck(path: "/health", port: 8080, interval: .milliseconds(200), timeout: .seconds(1), failureThreshold: 2))
            try await harness.assign(task, spec)
            let running = try await waitForStatus(&events, task, "running") { $0.state == .running }
            #expect(running.health == .starting)
            _ = try await waitForStatus(&events, task, "healthy") { $0.health == .healthy }
            let unhealthy = try await waitForStatus(&events, task, "unhealthy") { $0.health == .unhealthy }
            #expect(unhealthy.state == .running, "the container lives on; the manager decides on restarts")
            #expect(try await harness.containers(of: task).first?.state == "running")
        }
    }

    @Test func aCutConnectionIsReestablishedWithTheTaskListAndUnacknowledgedStatuses() async throws {
        try await WorkerHarness.with(autoAck: false) { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let runner = TaskID(rawValue: "runner")
            let quitter = TaskID(rawValue: "quitter")
            try await harness.assign(runner, sleeper())
            try await harness.assign(quitter, TaskSpec(image: testImage, command: ["sh", "-c", "exit 4"]))
            // The two statuses come in either order (the quitter may be done before the runner runs).
            _ = try await awaitStatus(harness.peer, runner, "running") { $0.state == .running }
            let failed = try await awaitStatus(harness.peer, quitter, "failed") { $0.state == .failed }

            await harness.peer.dropAll()
            try await harness.waitForConnection(2, &events)
            let list = try await events.next("task list") { if case .message(2, .taskList(let list)) = $0 { list } else { nil } }
            #expect(list.entries.contains { $0.task == runner && $0.state == .running && $0.attempt == 1 })
            #expect(list.entries.contains { $0.task == quitter && $0.state == .failed })
            let again = try await waitForStatus(&events, quitter, "re-sent failed status") { $0.state == .failed }
            #expect(again.statusID == failed.statusID && again.exitCode == 4)
            #expect(try await harness.containers(of: runner).count == 1, "nothing restarted")
        }
    }

    @Test func aManagerThatFallsSilentOnAnOpenConnectionIsDroppedAndRedialed() async throws {
        try await WorkerHarness.with(managerSilence: .seconds(1)) { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "silent-\(UUID().uuidString.prefix(6).lowercased())")
            try await harness.assign(task, sleeper())
            _ = try await waitForStatus(&events, task, "running") { $0.state == .running }
            // Answered, the connection is kept well past the silence allowed.
            try await Task.sleep(for: .milliseconds(1500))
            #expect(harness.peer.currentConnection == 1, "a manager that answers is not dropped")

            // The manager stops answering; the TCP connection stays open.
            harness.peer.answersHeartbeats.withLock { $0 = false }
            let silentSince = ContinuousClock.now
            _ = try await events.next(within: .seconds(5), "the silent connection closed") { if case .closed(1) = $0 { true } else { nil } }
            harness.peer.answersHeartbeats.withLock { $0 = true }
            _ = try await events.next(within: .seconds(5), "a new connection") { if case .connected(2, _) = $0 { true } else { nil } }
            let elapsed = ContinuousClock.now - silentSince
            #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(4), "reconnected after \(elapsed)")
            // The new connection starts with the task list, the running task in it.
            let list = try await events.next("task list on connection 2") { if case .message(2, .taskList(let list)) = $0 { list } else { nil } }
            #expect(list.entries.map(\.task) == [task] && list.entries.first?.state == .running)
            #expect(try await harness.containers(of: task).count == 1, "the container ran on through the reconnect")
        }
    }

    @Test func logsAreServedWithFlowControl() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "talker")
            try await harness.assign(task, TaskSpec(image: testImage, command: ["sh", "-c", "echo first-line-of-output; sleep 300"]))
            _ = try await waitForStatus(&events, task, "running") { $0.state == .running }
            try await Task.sleep(for: .milliseconds(300))
            let connection = try #require(harness.peer.currentConnection)
            try await harness.peer.send(.logRequest(LogRequest(streamID: 7, task: task, tail: nil, follow: true, credit: 5, attempt: 1)), on: connection)
            let first = try await events.next("first chunk") { if case .message(_, .logChunk(let chunk)) = $0 { chunk } else { nil } }
            #expect(first.streamID == 7 && first.bytes.count <= 5)
            try await Task.sleep(for: .milliseconds(300))
            let sent = harness.peer.messages.compactMap { if case .logChunk(let c) = $0 { c.bytes.count } else { nil } }.reduce(0, +)
            #expect(sent == 5, "no more than the credit granted")
            try await harness.peer.send(.logCredit(LogCredit(streamID: 7, bytes: 1000)), on: connection)
            var text = ""
            while !text.contains("first-line-of-output") {
                let chunk = try await events.next("more chunks") { if case .message(_, .logChunk(let chunk)) = $0 { chunk } else { nil } }
                let bytes: [UInt8] = harness.peer.messages.flatMap { message -> [UInt8] in
                    if case .logChunk(let c) = message { return c.bytes }
                    return []
                }
                text = String(decoding: bytes, as: UTF8.self)
                _ = chunk
            }
            #expect(text.hasPrefix("first-line-of-output"))
            // The manager ends the stream; a request for an unknown task ends at once with an error.
            try await harness.peer.send(.logEnd(LogEnd(streamID: 7, error: nil)), on: connection)
            try await harness.peer.send(.logRequest(LogRequest(streamID: 8, task: TaskID(rawValue: "nope"), tail: 10, follow: false, credit: 100, attempt: 1)), on: connection)
            let end = try await events.next("end of stream 8") { if case .message(_, .logEnd(let end)) = $0, end.streamID == 8 { end } else { nil } }
            #expect(end.error?.contains("not on this worker") == true)
        }
    }

    /// An attempt that ended and was replaced has its container removed, but the worker kept
    /// its output first: a request for that attempt is served from the copy (with `tail`),
    /// one for an attempt it never ran ends with an error that says so.
    @Test func anEndedAttemptsOutputOutlivesItsContainer() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "crasher")
            try await harness.assign(task, attempt: 1, TaskSpec(image: testImage, command: ["sh", "-c", "echo to-stderr >&2; sleep 0.2; echo one; echo two; exit 3"]))
            _ = try await waitForStatus(&events, task, "failed") { $0.state == .failed && $0.attempt == 1 }
            let first = try #require(await harness.worker.supervisor.container(of: task))
            try await harness.assign(task, attempt: 2, sleeper())
            _ = try await waitForStatus(&events, task, "attempt 2 running") { $0.state == .running && $0.attempt == 2 }
            let deadline = ContinuousClock.now + .seconds(10)
            func exists(_ container: ContainerID) async throws -> Bool {
                try await harness.runtime.list(labels: [ContainerLabel.node: harness.worker.node.rawValue]).contains { $0.id == container }
            }
            while try await exists(first), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await !exists(first), "attempt 1's container is removed")

            let connection = try #require(harness.peer.currentConnection)
            func read(_ stream: UInt64, attempt: UInt64, tail: UInt32?) async throws -> (stdout: String, stderr: String, error: String?) {
                try await harness.peer.send(.logRequest(LogRequest(streamID: stream, task: task, tail: tail, follow: true, credit: 1 << 20, attempt: attempt)), on: connection)
                let end = try await events.next("end of stream \(stream)") { if case .message(_, .logEnd(let end)) = $0, end.streamID == stream { end } else { nil } }
                let chunks = harness.peer.messages.compactMap { if case .logChunk(let chunk) = $0, chunk.streamID == stream { chunk } else { nil } }
                let text = { (kind: LogData.Stream) in String(decoding: chunks.filter { $0.stream == kind }.flatMap(\.bytes), as: UTF8.self) }
                return (text(.stdout), text(.stderr), end.error)
            }
            var copy = try await read(20, attempt: 1, tail: nil)
            while copy.stdout.isEmpty, ContinuousClock.now < deadline {   // the copy is written just before the removal
                try await Task.sleep(for: .milliseconds(100))
                copy = try await read(UInt64(21 + Int.random(in: 0..<1000)), attempt: 1, tail: nil)
            }
            #expect(copy.stdout == "one\ntwo\n" && copy.stderr == "to-stderr\n" && copy.error == nil, "\(copy)")
            let tail = try await read(2000, attempt: 1, tail: 1)
            #expect(tail.stdout == "two\n" && tail.stderr.isEmpty, "\(tail)")
            let never = try await read(2001, attempt: 7, tail: nil)
            #expect(never.error?.contains("attempt 7 of task crasher is not on this worker") == true, "\(never)")
        }
    }

    @Test func aFollowedLogStreamEndsWhenTheConnectionDrops() async throws {
        try await WorkerHarness.with { harness in
            var events = EventReader(harness.peer)
            try await harness.waitForConnection(1, &events)
            let task = TaskID(rawValue: "quiet")
            try await harness.assign(task, sleeper())
            _ = try await waitForStatus(&events, task, "running") { $0.state == .running }
            try await harness.peer.send(.logRequest(LogRequest(streamID: 3, task: task, tail: nil, follow: true, credit: 100, attempt: 1)), on: 1)
            let deadline = ContinuousClock.now + .seconds(10)
            while await harness.worker.logs.openStreams == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await harness.worker.logs.openStreams == 1, "the follow stream is open")
            await harness.peer.dropAll()
            while await harness.worker.logs.openStreams > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await harness.worker.logs.openStreams == 0, "no reader is left waiting for credit from a connection that is gone")
        }
    }

    @Test func twoWorkersOnOneEngineNeverTouchEachOthersContainers() async throws {
        let peer = ScriptedManager(heartbeatInterval: .milliseconds(100))
        try await WorkerHarness.with(name: "one", peer: peer) { one in
            var events = EventReader(peer)
            try await one.waitForConnection(1, &events)
            let task = TaskID(rawValue: "shared-name")
            try await one.assign(task, sleeper())
            _ = try await waitForStatus(&events, task, "running on one") { $0.state == .running }
            try await WorkerHarness.with(name: "two", peer: peer) { two in
                let hello = try await two.waitForConnection(2, &events)
                #expect(hello.nodeID != one.worker.node)
                let list = try await events.next("two's task list") { if case .message(2, .taskList(let list)) = $0 { list } else { nil } }
                #expect(list.entries.isEmpty, "two adopts nothing of one's")
                // A stop sent to two for one's task changes nothing.
                try await peer.send(.stopTask(StopTask(task: task, attempt: 1)), on: 2)
                try await Task.sleep(for: .milliseconds(500))
                #expect(try await one.containers(of: task).first?.state == "running")
                #expect(await two.worker.tasks().isEmpty)
            }
            #expect(try await one.containers(of: task).first?.state == "running", "two's clean-up left one's container alone")
        }
    }
}
