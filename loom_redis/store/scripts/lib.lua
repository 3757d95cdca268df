-- Helpers shared by every script: loom_redis.store prepends this file to each one.
local TERMINAL = {COMPLETED = true, FAILED = true, CANCELLED = true}

local function ack(queue, group, task_id)
  if task_id ~= '' then
    redis.call('XACK', queue, group, task_id)
    redis.call('XDEL', queue, task_id)
  end
end

local function append_event(history, event_type, seq, now, data)
  return redis.call('XADD', history, '*', 'type', event_type, 'seq', seq, 't', now, 'd', data)
end

-- At most one workflow task per workflow waits in a queue; the meta flag 'wft' says
-- one is queued or running, so a burst of events costs one replay, not one per event.
-- `carried` (optional) are more fields of the task entry.
local function request_workflow_task(meta, queue, workflow_id, carried)
  if redis.call('HGET', meta, 'wft') ~= '1' then
    redis.call('HSET', meta, 'wft', '1')
    redis.call('XADD', queue, '*', 'k', 'w', 'wf', workflow_id, unpack(carried or {}))
  end
end

-- Status index zsets are named by appending the status to a prefix of the same slot.
local function set_status(meta, index_prefix, workflow_id, old, new, now)
  if old ~= new then
    if old then redis.call('ZREM', index_prefix .. old, workflow_id) end
    redis.call('ZADD', index_prefix .. new, now, workflow_id)
    redis.call('HSET', meta, 'status', new)
  end
end

local function open_status(meta)
  local status = redis.call('HGET', meta, 'status')
  if not status or TERMINAL[status] then return nil, status end
  return status, status
end

-- Deliver the queue's next task to the worker that is finishing one, in the same round
-- trip: with no backlog that is the task this transition just queued (the activity a
-- commit scheduled, the workflow task a result requested), so a workflow's chain stays
-- on the worker holding its instance. Under a backlog it is the oldest waiting task,
-- as a read would have been. An empty consumer takes nothing. Returns {id, fields} or
-- false.
local function take_next(queue, group, consumer)
  if consumer == '' then return false end
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
    'STREAMS', queue, '>')
  if not reply then return false end
  return reply[1][2][1]
end
