"""A quiz: generate it, publish it, wait for the quiz window, grade every submission.

Loom's `AssessmentWorkflow` example. The grading step runs one activity per
submission in parallel (`asyncio.gather` of activities works in workflow code),
and the wait is a durable timer: a worker that dies during it loses nothing.

    loom worker examples.assessment
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from typing import Any, TypedDict

import loom_redis as loom

log = logging.getLogger(__name__)


class QuizInput(loom.Input):
    lesson_id: str
    students: list[str]
    quiz_window_seconds: float


class Submission(TypedDict):
    student: str
    answers: list[str]


class Grade(TypedDict):
    student: str
    score: int


class QuizState(loom.State):
    quiz_id: str | None
    submissions: list[Submission] | None
    result: dict[str, Any] | None
    stored: bool


QuizContext = loom.WorkflowContext[QuizInput, QuizState]


# Activities: random numbers and I/O belong here, never in workflow code.


@loom.activity(name="GenerateQuiz")
async def generate_quiz_activity(lesson_id: str) -> str:
    await asyncio.sleep(0.5)
    quiz_id = f"Quiz-{random.randint(1000, 9999)}"
    log.info("generated %s for lesson %s", quiz_id, lesson_id)
    return quiz_id


@loom.activity(name="SendQuizToLMS", retry_count=3)
async def send_quiz_to_lms_activity(quiz_id: str) -> None:
    await asyncio.sleep(0.3)
    log.info("sent %s to the LMS", quiz_id)


@loom.activity(name="PullSubmissions", retry_count=3)
async def pull_submissions_activity(quiz_id: str, students: list[str]) -> list[Submission]:
    await asyncio.sleep(0.4)
    log.info("pulled %d submissions of %s", len(students), quiz_id)
    return [
        Submission(student=student, answers=[random.choice("ABCD") for _ in range(10)])
        for student in students
    ]


@loom.activity(name="GradeSubmission", retry_count=2, timeout_seconds=30)
async def grade_submission_activity(quiz_id: str, submission: Submission) -> Grade:
    await asyncio.sleep(random.uniform(0.5, 1.0))  # a model reading the answers
    return Grade(student=submission["student"], score=random.randint(50, 100))


@loom.activity(name="StoreResult")
async def store_result_activity(result: dict[str, Any]) -> None:
    await asyncio.sleep(0.2)
    log.info("stored result %s", result)


@loom.workflow(
    name="AssessmentWorkflow",
    version="1.1.0",
    description="A workflow for Quiz management.",
    agent="Robin",
)
class AssessmentWorkflow(loom.Workflow[QuizInput, QuizState]):
    @loom.step(name="generate_quiz", description="generating your quiz")
    async def generate_quiz(self, ctx: QuizContext) -> None:
        ctx.logger.info("Generating Quiz...")
        quiz_id = await ctx.activity(generate_quiz_activity, ctx.input["lesson_id"])
        await ctx.state.set("quiz_id", quiz_id)

    @loom.step(name="send_to_lms", description="publishing the quiz to the LMS")
    async def send_to_lms(self, ctx: QuizContext) -> None:
        ctx.logger.info("Sending Quiz %s to LMS...", ctx.state.quiz_id)
        await ctx.activity(send_quiz_to_lms_activity, ctx.state.quiz_id)

    @loom.step(name="wait_step", description="waiting for the quiz window to close")
    async def wait_step(self, ctx: QuizContext) -> None:
        wait = timedelta(seconds=ctx.input["quiz_window_seconds"])
        ctx.logger.info("Waiting for %s...", wait)
        await ctx.sleep(delta=wait)

    @loom.step(name="pull_submissions", description="collecting the submissions")
    async def pull_submissions(self, ctx: QuizContext) -> None:
        submissions = await ctx.activity(
            pull_submissions_activity, ctx.state.quiz_id, ctx.input["students"]
        )
        await ctx.state.set("submissions", submissions)

    @loom.step(name="assess_result", description="grading the submissions")
    async def assess_result(self, ctx: QuizContext) -> None:
        quiz_id = ctx.state.get("quiz_id")
        submissions: list[Submission] = ctx.state.get("submissions") or []
        # One activity per submission, all scheduled at once and run in parallel.
        grades: list[Grade] = await asyncio.gather(
            *(ctx.activity(grade_submission_activity, quiz_id, s) for s in submissions)
        )
        scores = {grade["student"]: grade["score"] for grade in grades}
        average = round(sum(scores.values()) / len(scores), 1) if scores else None
        await ctx.state.set(
            "result",
            {"quiz_id": quiz_id, "scores": scores, "average": average, "status": "Completed"},
        )

    @loom.step(name="store_result", description="storing the results")
    async def store_result(self, ctx: QuizContext) -> None:
        await ctx.activity(store_result_activity, ctx.state.get("result"))
        await ctx.state.set("stored", True)
        ctx.logger.info("Workflow completed!")
